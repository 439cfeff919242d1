import { FilestoreError, NotFoundError } from '../../errors.ts';
import { updateNodeMetadata } from '../../catalogue/node-writes.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';
import { asJson, type CommandSpec } from '../context.ts';
import { assertVersion } from '../checks.ts';

export interface UpdateMetadataRequest {
  path: string;
  set?: Record<string, unknown> | undefined;
  unset?: string[] | undefined;
  expectedVersion?: number | undefined;
}

// Keys Filestore itself maintains from storage; users cannot overwrite them.
const RESERVED_KEYS = new Set(['symlinkTarget']);

/** Edits a node's user metadata (catalogue only; storage is not touched). */
export const updateMetadataCommand: CommandSpec<UpdateMetadataRequest, CatalogueNode, null, null> = {
  command: 'updateMetadata',
  paths: (r) => [r.path],
  journalRequest: (r) => ({
    path: r.path,
    set: r.set ?? {},
    unset: r.unset ?? [],
    ...(r.expectedVersion !== undefined ? { expectedVersion: r.expectedVersion } : {}),
  }),

  async prepare({ live }, r) {
    for (const k of [...Object.keys(r.set ?? {}), ...(r.unset ?? [])]) {
      if (RESERVED_KEYS.has(k)) throw new FilestoreError('VALIDATION_ERROR', `metadata key "${k}" is maintained by Filestore`);
    }
    const node = (await live([r.path])).get(r.path) ?? null;
    if (!node) throw new NotFoundError(`"${r.path}" is not in the catalogue`);
    assertVersion(node, r.expectedVersion, r.path);
    return node;
  },

  async apply() {
    return null;
  },

  async observe() {
    return null;
  },

  async commit({ q, mount, entryId }, r, node) {
    const updated = await updateNodeMetadata(q, node.id, r.set ?? {}, r.unset ?? [], { journalEntryId: entryId });
    return {
      result: { journalEntryId: entryId, node: asJson(updated) },
      events: [{ type: 'filestore.node.updated', mountId: mount.id, data: { node: asJson(updated), previousVersion: node.version, journalEntryId: entryId } }],
    };
  },
};
