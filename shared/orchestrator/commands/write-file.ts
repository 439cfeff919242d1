import type { Readable } from 'node:stream';
import { FilestoreError } from '../../errors.ts';
import type { WriteResult } from '../../backends/types.ts';
import { newNodeFromStat, updateNodeFromStat, type NewNode } from '../../catalogue/node-writes.ts';
import { addToAncestors, childPart, ownTotals } from '../../catalogue/rollups.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';
import { asJson, type CommandSpec, stagingIdOf } from '../context.ts';
import { assertVersion, catalogueCreated, checkParentChain, statCreated } from '../checks.ts';

export interface WriteFileRequest {
  path: string;
  body: Readable;
  /** If-Match: the version the caller last saw (0 = the file must not exist yet). */
  expectedVersion?: number | undefined;
  /** X-Checksum-Sha256: the write fails with CHECKSUM_MISMATCH unless the bytes hash to this. */
  expectedSha256?: string | undefined;
  /** The body's sha256 and size when it was in memory before the command (a small upload). */
  content?: { sha256: string; sizeBytes: number } | undefined;
  /** The body's bytes when it was in memory (the same as `body`): the backend may write them from here. */
  bytes?: Buffer | undefined;
}

/**
 * The body's hash and size, journaled with the pending entry when known before the command
 * starts and when the write can succeed with them (a body failing its X-Checksum-Sha256 is
 * journaled as before: by nobody, it fails before its bytes are placed).
 */
function knownContent(r: WriteFileRequest): { contentSha256: string; contentSizeBytes: number } | undefined {
  if (!r.content || (r.expectedSha256 !== undefined && r.expectedSha256.toLowerCase() !== r.content.sha256)) return undefined;
  return { contentSha256: r.content.sha256, contentSizeBytes: r.content.sizeBytes };
}

interface Plan {
  existing: CatalogueNode | null;
  missingAncestors: string[];
}

interface Outcome {
  write: WriteResult;
  ancestors: NewNode[];
}

/** Creates or replaces a file from a stream, creating missing parent directories. */
export const writeFileCommand: CommandSpec<WriteFileRequest, Plan, WriteResult, Outcome> = {
  command: 'writeFile',
  paths: (r) => [r.path],
  journalRequest: (r) => ({
    path: r.path,
    ...(r.expectedVersion !== undefined ? { expectedVersion: r.expectedVersion } : {}),
    ...(r.expectedSha256 !== undefined ? { expectedSha256: r.expectedSha256 } : {}),
  }),
  journalFacts: knownContent,

  async prepare(step, r) {
    if (r.path === '') throw new FilestoreError('IS_A_DIRECTORY', 'the mount root is a directory');
    const chain = await checkParentChain(step, r.path, true);
    const existing = chain.self;
    if (existing?.kind === 'directory') throw new FilestoreError('IS_A_DIRECTORY', `"${r.path}" is a directory`);
    assertVersion(existing, r.expectedVersion, r.path);
    return { existing, missingAncestors: chain.missing };
  },

  apply({ backend, entryId, journal }, r) {
    const known = knownContent(r);
    return backend.writeFile(r.path, r.body, {
      stagingId: stagingIdOf(entryId),
      expectedSha256: r.expectedSha256,
      bytes: r.bytes,
      // Journaled before the bytes become visible: recovery completes the entry only if the
      // file at the path has exactly this hash. Known up front, it is in the pending entry
      // already (journalFacts): the bytes written must be those.
      beforeCommit: async ({ sha256, sizeBytes }) => {
        if (!known) return journal({ contentSha256: sha256, contentSizeBytes: sizeBytes });
        if (known.contentSha256 !== sha256 || known.contentSizeBytes !== sizeBytes) {
          throw new FilestoreError('INTERNAL', `the bytes written for "${r.path}" are not the body journaled (sha256 ${sha256}, expected ${known.contentSha256})`);
        }
      },
    });
  },

  async observe({ backend }, _r, plan, write) {
    return { write, ancestors: await statCreated(backend, plan.missingAncestors) };
  },

  written: ({ write }) => write,

  // A new file whose parents are catalogued: one round trip (file-commit.ts) does what commit does.
  newFile: (plan, { write, ancestors }) => (plan.existing === null && plan.missingAncestors.length === 0 && ancestors.length === 0 && write.kind === 'file' ? write : null),

  async commit({ q, mount, entryId }, r, plan, { write, ancestors }) {
    const { events } = await catalogueCreated(q, mount.id, ancestors, entryId);
    // Read under the command's path lock, which every writer of this path (reconciliation too) takes.
    const existing = plan.existing;
    if (existing) {
      const node = await updateNodeFromStat(q, existing.id, write, write.sha256, { journalEntryId: entryId });
      // The file now counts in full; what the row counted before (nothing if MISSING) goes.
      const was = ownTotals(existing);
      await addToAncestors(q, mount.id, r.path, { sizeBytes: node.sizeBytes - was.sizeBytes, fileCount: 1 - was.fileCount, dirCount: -was.dirCount }, 1 - childPart(existing));
      events.push({ type: 'filestore.node.updated', mountId: mount.id, data: { node: asJson(node), previousVersion: existing.version, journalEntryId: entryId } });
      return { result: { journalEntryId: entryId, node: asJson(node) }, events };
    }
    const created = await catalogueCreated(q, mount.id, [newNodeFromStat(write, write.sha256)], entryId);
    events.push(...created.events);
    return { result: { journalEntryId: entryId, node: asJson(created.inserted[0]) }, events };
  },
};
