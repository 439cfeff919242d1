import type { Backend, EntryStat } from '../backends/types.ts';
import type { BackendRegistry } from '../backends/registry.ts';
import type { Pool, PoolClient } from '../db/pool.ts';
import type { Mount } from '../catalogue/types.ts';
import { FilestoreError } from '../errors.ts';
import { findEntry, listPending, type JournalEntry } from '../catalogue/journal.ts';
import { getMount } from '../catalogue/mounts.ts';
import { recoversHere, type ProcessIdentity } from './ownership.ts';
import { countLiveDescendants } from '../catalogue/nodes.ts';
import { stagingIdOf, type CommandSpec, type Step } from './context.ts';

// Recovery drives any command through prepare → observe → commit with values it built from
// storage; the phases' own types are checked where each command is written.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyCommandSpec<Req> = CommandSpec<Req, any, any, any>;
import { commitCommand, recordFailure } from './finish.ts';
import { acquire, lockEntry, pathLocks, release, tryLockEntry, unlockEntry } from '../catalogue/locks.ts';
import { makeStep } from './step.ts';
import { uploadOpen, uploadStateOf } from '../catalogue/upload-state.ts';
import { mkdirCommand } from './commands/mkdir.ts';
import { writeFileCommand } from './commands/write-file.ts';
import { deleteCommand } from './commands/delete.ts';
import { copyCommand, moveCommand, statSubtree } from './commands/move-copy.ts';

/**
 * Resolves journal entries left `pending` — by a process that died between the journal and
 * the catalogue commit, or by a storage call that failed without saying how far it got.
 * Storage is the witness, judged against facts journaled before storage was touched:
 * - an effect that is complete is catalogued and the entry `succeeded`;
 * - an effect that is absent makes the entry `failed` (INTERRUPTED, or the storage error);
 * - a partly applied move/copy/delete (S3 has no atomic tree operations; a local replace
 *   can die between its two renames) is finished, but only over what the command was
 *   allowed to replace: a target that existed before is never overwritten unless the
 *   request said overwrite.
 * Entries whose owner is alive (it holds the entry lock) are left alone.
 */

export interface RecoveryDeps {
  pool: Pool;
  backends: BackendRegistry;
  afterCommit(mountId: string): Promise<void>;
}

/** `skipped`: its owner is alive. `error`: storage could not be read (mount offline); retried next sweep. */
export type RecoveryOutcome = 'succeeded' | 'failed' | 'skipped' | 'error';

const interrupted = () =>
  new FilestoreError('INTERRUPTED', 'the process running this command stopped before it changed storage; nothing was changed, retry the command');

/** A pending entry a recovery sweep could not judge (its storage could not be read), named for the log. */
export interface UnresolvedEntry {
  id: number;
  command: string;
  path: string;
  targetPath?: string | undefined;
  mountId: string;
  mountKey: string;
  /** Why storage could not be read (the error's code and message). */
  reason: string;
}

export type RecoveryCounts = Record<RecoveryOutcome | 'elsewhere', number>;

/**
 * Resolves every pending entry no live process owns, oldest first, of the mounts this process
 * may judge (`recoversHere`): entries of another agent's local mount are left to that agent,
 * which sees the disk (counted as `elsewhere`). Each entry left unresolved is passed to
 * `onUnresolved` (the maintenance log names them).
 */
export async function recoverPending(
  deps: RecoveryDeps,
  identity: ProcessIdentity = undefined,
  onUnresolved?: (entry: UnresolvedEntry) => void,
): Promise<RecoveryCounts> {
  const counts = { succeeded: 0, failed: 0, skipped: 0, error: 0, elsewhere: 0 };
  const judged = new Map<string, Promise<Mount | null>>();
  const judgesHere = (mountId: string) => {
    let here = judged.get(mountId);
    if (!here) {
      here = getMount(deps.pool, mountId).then((m) => (recoversHere(identity, m) ? m : null), () => null);
      judged.set(mountId, here);
    }
    return here;
  };
  for (let after = 0; ; ) {
    const batch = await listPending(deps.pool, after, 200);
    if (batch.length === 0) return counts;
    for (const entry of batch) {
      after = entry.id;
      const mount = await judgesHere(entry.mountId);
      if (!mount) {
        counts.elsewhere += 1;
        continue;
      }
      const outcome = await recoverEntry(deps, entry).catch((err: unknown) => {
        const e = err instanceof FilestoreError ? err : null;
        const req = entry.request as { path?: unknown; targetPath?: unknown };
        onUnresolved?.({
          id: entry.id,
          command: entry.command,
          path: String(req.path ?? ''),
          targetPath: typeof req.targetPath === 'string' ? req.targetPath : undefined,
          mountId: mount.id,
          mountKey: mount.key,
          reason: e ? `${e.code}: ${e.message}` : String((err as Error)?.message ?? err),
        });
        return 'error' as const;
      });
      counts[outcome] += 1;
    }
  }
}

export interface RecoverOptions {
  /** Work on this connection (its other locks are kept) instead of a pooled one. */
  client?: PoolClient | undefined;
  /** Wait for a live owner (e.g. another recoverer) to finish instead of skipping. */
  wait?: boolean | undefined;
}

export async function recoverEntry(deps: RecoveryDeps, stale: JournalEntry, o: RecoverOptions = {}): Promise<RecoveryOutcome> {
  const req = stale.request as { path: string; targetPath?: string };
  const locks = pathLocks(stale.mountId, req.targetPath !== undefined ? [req.path, req.targetPath] : [req.path]);
  const client = o.client ?? (await deps.pool.connect());
  let entryLocked = false;
  let pathsLocked = false;
  try {
    if (o.wait) await lockEntry(client, stale.id);
    else if (!(await tryLockEntry(client, stale.id))) return 'skipped';
    entryLocked = true;
    await acquire(client, locks);
    pathsLocked = true;
    const entry = await findEntry(client, stale.id);
    if (!entry || entry.status !== 'pending') return 'skipped';
    if (uploadOpen(entry)) return 'skipped'; // a presigned upload's bytes may still be on their way
    const mount = await getMount(client, entry.mountId);
    const backend = deps.backends.forMount(mount);
    await backend.ready?.(); // storage that cannot be reached at all says why (no credentials, root gone), judged nothing
    const outcome = await resolveEntry(makeStep(client, mount, backend, entry.id), entry);
    await deps.afterCommit(mount.id);
    return outcome;
  } finally {
    if (pathsLocked) await release(client, locks).catch(() => {});
    if (entryLocked) await unlockEntry(client, stale.id).catch(() => {});
    if (!o.client) client.release();
  }
}

// Answers from storage that prove nothing can exist at a path (rather than "cannot tell").
const ABSENT_CODES = new Set(['NOT_FOUND', 'NOT_A_DIRECTORY', 'SYMLINK_IN_PATH', 'PATH_ESCAPES_MOUNT']);

/** stat, with "nothing can be there" (a file or symlink in the way) read as absent. */
async function statOrAbsent(backend: Backend, path: string): Promise<EntryStat | null> {
  try {
    return await backend.stat(path);
  } catch (err) {
    if (err instanceof FilestoreError && ABSENT_CODES.has(err.code)) return null;
    throw err;
  }
}

/** Same kind and size, and the same mtime and ETag where storage has them. */
function sameStat(a: { kind: string; sizeBytes: number; mtime: Date | string | null; etag: string | null } | undefined, b: EntryStat | null): boolean {
  if (!a || !b) return false;
  const t = (d: Date | string | null) => (d === null ? null : new Date(d).valueOf());
  return a.kind === b.kind && a.sizeBytes === b.sizeBytes && t(a.mtime) === t(b.mtime) && (a.etag ?? null) === (b.etag ?? null);
}

/** True when `to` holds what a copy of `from` would: the same entries, kinds and sizes (and bytes, for a file). */
async function looksLikeCopy(backend: Backend, from: string, to: string): Promise<boolean> {
  const [a, b] = await Promise.all([statSubtree(backend, from), statSubtree(backend, to)]);
  if (a.length !== b.length) return false;
  const rel = (s: EntryStat, root: string) => (s.path === root ? '' : s.path.slice(root.length + 1));
  for (let i = 0; i < a.length; i++) {
    const x = a[i] as EntryStat;
    const y = b[i] as EntryStat;
    if (rel(x, from) !== rel(y, to) || x.kind !== y.kind || x.sizeBytes !== y.sizeBytes) return false;
  }
  if (a[0]?.kind === 'file') return (await backend.hash(from)) === (await backend.hash(to));
  return true;
}

/**
 * Decides a pending entry from storage, on a connection that holds the entry's locks.
 * `notApplied` is the error to record when storage shows the command had no effect (the
 * storage error that interrupted it); by default INTERRUPTED. `recovered` is false when the
 * command's own run asks (a storage call failed), true for a crashed command.
 */
export async function resolveEntry(
  step: Step,
  entry: JournalEntry,
  notApplied: FilestoreError = interrupted(),
  recovered = true,
): Promise<'succeeded' | 'failed'> {
  const { q, mount, backend } = step;
  const r = entry.request as {
    path: string;
    targetPath: string;
    parents?: boolean;
    recursive?: boolean;
    overwrite?: boolean;
    contentSha256?: string;
    contentSizeBytes?: number;
    targetPreExisted?: boolean;
    targetPreStat?: { kind: string; sizeBytes: number; mtime: string | null; etag: string | null };
  };
  const fail = async (err: FilestoreError) => {
    await recordFailure(q, mount, entry.command, entry.id, err, recovered);
    return 'failed' as const;
  };
  /** Finishes the entry as if the command had run through: prepare, observe, commit. */
  const complete = async <Req>(spec: AnyCommandSpec<Req>, req: Req, applied: unknown) => {
    const plan = await spec.prepare(step, req);
    const outcome = await spec.observe(step, req, plan, applied);
    await commitCommand(q, step, spec, req, plan, outcome, entry.request, recovered);
    return 'succeeded' as const;
  };

  // Whatever the command staged (a temp file, a half-built copy, a set-aside entry) is garbage
  // now: its owner is gone, or its own storage call failed and was cleaned up.
  const stagingId = stagingIdOf(entry.id);
  await backend.discardStaging(stagingId);
  switch (entry.command) {
    case 'writeFile': {
      // A presigned upload never completed (its staged bytes were discarded above).
      if (uploadStateOf(entry) && r.contentSha256 === undefined) {
        return fail(new FilestoreError('UPLOAD_EXPIRED', `upload ${entry.id} was not completed before it expired; its bytes were removed, start a new upload`));
      }
      const stat = await statOrAbsent(backend, r.path);
      const ours =
        r.contentSha256 !== undefined &&
        stat?.kind === 'file' &&
        (r.contentSizeBytes === undefined || stat.sizeBytes === r.contentSizeBytes) &&
        (await backend.hash(r.path))?.sha256 === r.contentSha256;
      if (!ours) return fail(notApplied);
      return complete(writeFileCommand, { ...r, body: undefined as never }, { ...stat, sha256: r.contentSha256 });
    }
    case 'mkdir': {
      const stat = await statOrAbsent(backend, r.path);
      if (stat?.kind !== 'directory') return fail(notApplied);
      return complete(mkdirCommand, { path: r.path, parents: r.parents ?? false }, stat);
    }
    case 'delete': {
      const stat = await statOrAbsent(backend, r.path);
      if (stat) {
        if (stat.kind !== 'directory' || backend.kind !== 's3' || !r.recursive) return fail(notApplied);
        let onStorage = 0;
        for await (const _ of backend.list(r.path, { recursive: true })) onStorage += 1;
        if (onStorage >= (await countLiveDescendants(q, mount.id, r.path))) return fail(notApplied);
        await backend.delete(r.path, { recursive: true, stagingId }); // partly deleted: finish it
      }
      return complete(deleteCommand, { path: r.path, recursive: r.recursive ?? false }, { alreadyGone: false });
    }
    case 'move':
    case 'copy': {
      const pre = r.targetPreExisted;
      // No pre-state journaled: the process died before touching storage.
      if (pre === undefined || (pre && !r.overwrite)) return fail(notApplied);
      const [src, dst] = await Promise.all([statOrAbsent(backend, r.path), statOrAbsent(backend, r.targetPath)]);
      const req = { path: r.path, targetPath: r.targetPath, overwrite: true };
      const untouchedFile = pre && dst?.kind === 'file' && sameStat(r.targetPreStat, dst);
      if (entry.command === 'move') {
        if (!src && dst) return complete(moveCommand, req, undefined);
        if (!src) return fail(new FilestoreError('STORAGE_ERROR', `neither "${r.path}" nor "${r.targetPath}" exists on storage; reconcile the mount`));
        if ((!dst && !pre) || untouchedFile) return fail(notApplied);
        await backend.move(r.path, r.targetPath, { overwrite: true, stagingId }); // safe: the target is ours or was to be replaced
        return complete(moveCommand, req, undefined);
      }
      if (!src) return fail(new FilestoreError('STORAGE_ERROR', `the copy's source "${r.path}" is gone from storage; reconcile the mount`));
      if (dst && (await looksLikeCopy(backend, r.path, r.targetPath))) return complete(copyCommand, req, undefined);
      if ((!dst && !pre) || untouchedFile) return fail(notApplied);
      await backend.copy(r.path, r.targetPath, { overwrite: true, stagingId });
      return complete(copyCommand, req, undefined);
    }
    default:
      return fail(notApplied);
  }
}
