import type { Backend, EntryStat } from '../backends/types.ts';
import type { BackendRegistry } from '../backends/registry.ts';
import type { Pool, PoolClient } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';
import { findEntry, listPending, type JournalEntry } from '../catalogue/journal.ts';
import { getMount } from '../catalogue/mounts.ts';
import { findLiveByPath, listLive } from '../catalogue/nodes.ts';
import { newNodeFromStat } from '../catalogue/node-writes.ts';
import type { CatalogueNode } from '../catalogue/types.ts';
import type { CommandSpec, Step } from './context.ts';
import { checkParentChain, statCreated } from './checks.ts';
import { acquire, pathLocks, releaseAll, tryLockEntry } from './locks.ts';
import { commitCommand, recordFailure } from './pipeline.ts';
import { mkdirCommand } from './commands/mkdir.ts';
import { writeFileCommand } from './commands/write-file.ts';
import { deleteCommand } from './commands/delete.ts';
import { copyCommand, moveCommand } from './commands/move-copy.ts';

/**
 * Resolves journal entries left `pending` by a process that died between the journal and
 * the catalogue commit. Storage is the witness: an entry whose effect is on storage is
 * completed (catalogued, `succeeded`); one whose effect is absent is `failed` with
 * INTERRUPTED; a partly applied move/copy/delete (possible on S3, which has no atomic tree
 * operations) is finished, because the caller asked for it and its inputs are still there.
 * Entries whose owner is still alive (it holds the entry lock) are left alone.
 */

export interface RecoveryDeps {
  pool: Pool;
  backends: BackendRegistry;
  afterCommit(mountId: string): Promise<void>;
}

/** `skipped`: its owner is alive. `error`: storage could not be read (mount offline); retried next sweep. */
export type RecoveryOutcome = 'succeeded' | 'failed' | 'skipped' | 'error';

const interrupted = (what: string) =>
  new FilestoreError('INTERRUPTED', `the process running this command stopped before ${what}; storage was not changed, retry the command`);

/** Resolves every pending entry no live process owns. */
export async function recoverPending(deps: RecoveryDeps): Promise<Record<RecoveryOutcome, number>> {
  const counts = { succeeded: 0, failed: 0, skipped: 0, error: 0 };
  let after = 0;
  for (;;) {
    const batch = (await listPending(deps.pool, 200)).filter((e) => e.id > after);
    if (batch.length === 0) return counts;
    for (const entry of batch) {
      counts[await recoverEntry(deps, entry).catch(() => 'error' as const)] += 1;
      after = entry.id;
    }
  }
}

export async function recoverEntry(deps: RecoveryDeps, stale: JournalEntry): Promise<RecoveryOutcome> {
  const client = await deps.pool.connect();
  try {
    if (!(await tryLockEntry(client, stale.id))) return 'skipped';
    const req = stale.request as { path: string; targetPath?: string };
    await acquire(client, pathLocks(stale.mountId, req.targetPath !== undefined ? [req.path, req.targetPath] : [req.path]));
    const entry = await findEntry(client, stale.id);
    if (!entry || entry.status !== 'pending') return 'skipped';
    const mount = await getMount(client, entry.mountId);
    const step: Step = { q: client, mount, backend: deps.backends.forMount(mount), entryId: entry.id };
    const outcome = await resolve(client, step, entry);
    await deps.afterCommit(mount.id);
    return outcome;
  } finally {
    await releaseAll(client).catch(() => {});
    client.release();
  }
}

/** Same size, kind and (where storage has them) mtime and ETag: storage still holds what the catalogue says. */
function matches(node: CatalogueNode | null, stat: EntryStat | null): boolean {
  if (!node || !stat) return node === null && stat === null;
  if (node.kind !== stat.kind) return false;
  if (node.kind === 'directory') return true;
  return (
    node.sizeBytes === stat.sizeBytes &&
    (node.mtime?.valueOf() ?? null) === (stat.mtime?.valueOf() ?? null) &&
    (node.etag ?? null) === (stat.etag ?? null)
  );
}

async function countBelow(backend: Backend, path: string): Promise<number> {
  let n = 0;
  for await (const _ of backend.list(path, { recursive: true })) n += 1;
  return n;
}

async function resolve(client: PoolClient, step: Step, entry: JournalEntry): Promise<RecoveryOutcome> {
  const { q, mount, backend } = step;
  const r = entry.request as { path: string; targetPath: string; parents?: boolean; recursive?: boolean; overwrite?: boolean };
  const complete = async <Req, Plan, Outcome>(spec: CommandSpec<Req, Plan, Outcome>, req: Req, plan: Plan, outcome: Outcome) => {
    await commitCommand(client, step, spec, req, plan, outcome, entry.request, true);
    return 'succeeded' as const;
  };
  const fail = async (err: FilestoreError) => {
    await recordFailure(client, mount, entry.command, entry.id, err, true);
    return 'failed' as const;
  };
  const missingAncestors = async (path: string) => (await checkParentChain(q, mount.id, path, true).catch(() => ({ missing: [] }))).missing;

  switch (entry.command) {
    case 'writeFile': {
      await backend.discardStaging(`j${entry.id}`);
      const [node, stat] = await Promise.all([findLiveByPath(q, mount.id, r.path), backend.stat(r.path)]);
      if (stat?.kind !== 'file' || matches(node, stat)) return fail(interrupted('the new file was in place'));
      const write = { ...stat, sha256: await backend.hash(r.path) };
      const ancestors = await statCreated(backend, await missingAncestors(r.path));
      return complete(writeFileCommand, { ...r, body: undefined as never }, { existing: node, missingAncestors: [] }, { write, ancestors });
    }
    case 'mkdir': {
      const [node, stat] = await Promise.all([findLiveByPath(q, mount.id, r.path), backend.stat(r.path)]);
      if (stat?.kind !== 'directory' || node) return fail(interrupted('the directory was created'));
      const created = [...(await statCreated(backend, await missingAncestors(r.path))), newNodeFromStat(stat)];
      return complete(mkdirCommand, r, { existing: null, missingAncestors: [] }, created);
    }
    case 'delete': {
      const node = await findLiveByPath(q, mount.id, r.path);
      if (!node) return fail(interrupted('anything was deleted'));
      const stat = await backend.stat(r.path);
      if (stat && stat.kind === 'directory' && backend.kind === 's3' && r.recursive) {
        const catalogued = (await listLive(q, { mountId: mount.id, prefix: `${r.path}/`, limit: 1_000_000 })).length;
        if ((await countBelow(backend, r.path)) < catalogued) {
          await backend.delete(r.path, { recursive: true }); // partly deleted: finish it
          return complete(deleteCommand, r, node, { alreadyGone: false });
        }
      }
      if (stat) return fail(interrupted('anything was deleted'));
      return complete(deleteCommand, r, node, { alreadyGone: false });
    }
    case 'move':
    case 'copy': {
      const [source, target, srcStat, dstStat] = await Promise.all([
        findLiveByPath(q, mount.id, r.path),
        findLiveByPath(q, mount.id, r.targetPath),
        backend.stat(r.path),
        backend.stat(r.targetPath),
      ]);
      if (!source) return fail(interrupted('anything was moved'));
      const targetUntouched = dstStat === null || matches(target, dstStat);
      if (targetUntouched && (entry.command === 'copy' || srcStat !== null)) {
        return fail(interrupted(`anything was ${entry.command === 'copy' ? 'copied' : 'moved'}`));
      }
      if (dstStat === null) {
        return fail(new FilestoreError('STORAGE_ERROR', `neither "${r.path}" nor "${r.targetPath}" exists on storage; reconcile the mount`));
      }
      const spec = entry.command === 'move' ? moveCommand : copyCommand;
      // Finish a partly applied transfer (both ends present); redoing it is safe.
      if (srcStat !== null) await backend[entry.command](r.path, r.targetPath, { overwrite: true });
      const plan = await spec.prepare(step, { ...r, overwrite: true }).catch(() => null);
      const basePlan = { source, target, missingAncestors: [] as string[] };
      const ancestors = await statCreated(backend, await missingAncestors(r.targetPath));
      if (entry.command === 'move') {
        const restat: EntryStat[] = [];
        if (backend.kind === 's3') {
          const top = await backend.stat(r.targetPath);
          if (top) restat.push(top);
          if (top?.kind === 'directory') for await (const e of backend.list(r.targetPath, { recursive: true })) restat.push(e);
        }
        return complete(moveCommand, r, basePlan, { ancestors, restat });
      }
      const copied: EntryStat[] = [];
      const top = await backend.stat(r.targetPath);
      if (top) copied.push(top);
      if (top?.kind === 'directory') for await (const e of backend.list(r.targetPath, { recursive: true })) copied.push(e);
      const facts = (plan as { sourceFacts?: Map<string, { sha256: string | null; metadata: Record<string, unknown> }> } | null)?.sourceFacts ?? new Map();
      return complete(copyCommand, r, { ...basePlan, sourceFacts: facts }, { ancestors, copied });
    }
    default:
      return fail(interrupted('its change was recorded'));
  }
}
