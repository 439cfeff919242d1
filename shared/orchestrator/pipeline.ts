import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { BackendRegistry } from '../backends/registry.ts';
import type { Pool, PoolClient } from '../db/pool.ts';
import { FilestoreError, asFilestoreError } from '../errors.ts';
import { beginCommand, findByIdempotencyKey, findEntry, releaseIdempotencyKey, type JournalEntry, type NewEntry } from '../catalogue/journal.ts';
import { checkedBefore, MAX_JSON_DEPTH, tooDeep } from '../json-value.ts';
import { ancestorsOf } from '../paths.ts';
import { getMount } from '../catalogue/mounts.ts';
import type { Mount } from '../catalogue/types.ts';
import { lockIdempotencyKey, pathLocks, release, releaseAll, RELEASE_ALL_SQL } from '../catalogue/locks.ts';
import type { CommandContext, CommandResult, CommandSpec, OrchestratorHooks, Step } from './context.ts';
import { assertWritable } from './checks.ts';
import { commitCommand, recordFailure } from './finish.ts';
import { recoverEntry, resolveEntry, type RecoveryDeps } from './recovery.ts';
import { makeStep } from './step.ts';
import type { OwnWrites } from './own-writes.ts';
import type { CommandStatistics } from './statistics.ts';
import { uploadOpen, uploadStateOf } from '../catalogue/upload-state.ts';

export interface PipelineDeps extends RecoveryDeps {
  pool: Pool;
  backends: BackendRegistry;
  hooks?: OrchestratorHooks | undefined;
  /** Called after every commit that changed a mount (cache invalidation, relay nudge). */
  afterCommit(mountId: string): Promise<void>;
  mounts: MountCache;
  /** What this process's writes committed (own-writes.ts); any other change forgets the mount. */
  ownWrites?: OwnWrites | undefined;
  /** Told of every commit, to keep the planner's statistics up with the catalogue (statistics.ts). */
  statistics?: CommandStatistics | undefined;
}

// A mount's identity and location never change; its access mode and state do, and every
// command reads those fresh (begin_command). A cached mount that is gone is noticed there.
const MOUNT_TTL_MS = 10_000;

export type MountCache = Map<string, { mount: Mount; until: number }>;

async function resolveMount(pool: Pool, cache: MountCache, ref: string): Promise<Mount> {
  const hit = cache.get(ref);
  if (hit && hit.until > Date.now()) return hit.mount;
  const mount = await getMount(pool, ref);
  if (cache.size > 1000) cache.clear();
  cache.set(ref, { mount, until: Date.now() + MOUNT_TTL_MS });
  return mount;
}

/** Failures worth running again under the same idempotency key: nothing about the request was wrong. */
// INSUFFICIENT_STORAGE and UNAVAILABLE (a service, or a mount's root, unreachable) end when
// an operator acts: the caller was told to send the command again, so its key must run it.
const TRANSIENT = new Set(['INTERRUPTED', 'STORAGE_ERROR', 'INTERNAL', 'REQUEST_TIMEOUT', 'UNAVAILABLE', 'INSUFFICIENT_STORAGE']);

/** sha256 over the command and its canonical request: what makes two requests "the same". */
export function fingerprint(command: string, mountId: string, request: Record<string, unknown>, checked = false): string {
  // Requests are checked at the edge (parseInput: `checked`); one that was not is depth-checked
  // here (iteratively), so it cannot overflow the stack in canonical() or JSON.stringify.
  if (!checked && tooDeep(request) !== null) throw new FilestoreError('VALIDATION_ERROR', `the request nests deeper than ${MAX_JSON_DEPTH} levels`);
  const canonical = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v as object).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]))
      : v;
  return createHash('sha256').update(JSON.stringify([command, mountId, canonical(request)])).digest('hex');
}

/**
 * Runs one command: idempotency → path locks → journal `pending` (committed) → prepare →
 * storage → one transaction for catalogue + journal `succeeded` + outbox.
 * - A failure before storage (validation, preconditions, mount state) marks the entry
 *   `failed`; nothing else changes.
 * - A storage call that fails may have done part of its work, so storage decides
 *   (resolveEntry): the entry ends `failed` with the storage error when nothing changed,
 *   or is completed.
 * - A failure after storage succeeded (reading the result, the commit) leaves the entry
 *   `pending` for recovery, and the connection (with every lock) is dropped.
 */
export async function runCommand<Req, Plan, Applied, Outcome>(
  deps: PipelineDeps,
  spec: CommandSpec<Req, Plan, Applied, Outcome>,
  mountRef: string,
  req: Req,
  ctx: CommandContext,
  body?: Readable,
): Promise<CommandResult> {
  let cached = await resolveMount(deps.pool, deps.mounts, mountRef);
  const request = spec.journalRequest(req);
  // The journal request is made of the parsed request's parts: walked already if that was.
  const checked = checkedBefore(req);
  const printedFor = cached.id;
  const print = fingerprint(spec.command, printedFor, request, checked);
  const client = await deps.pool.connect();
  let broken = false;
  let released = false;
  try {
    if (ctx.idempotencyKey) {
      // Scoped to the caller: another principal's key of the same text is another key.
      await lockIdempotencyKey(client, ctx.principal ?? null, ctx.idempotencyKey);
      const prior = await findByIdempotencyKey(client, ctx.principal ?? null, ctx.idempotencyKey);
      if (prior) {
        const replayed = await replay(deps, client, prior, print, body);
        if (replayed) return replayed;
      }
    }
    const facts = spec.journalFacts?.(req);
    const entryFor = (mountId: string): NewEntry => ({
      mountId,
      command: spec.command,
      request: facts ? { ...request, ...facts } : request,
      idempotencyKey: ctx.idempotencyKey ?? null,
      requestFingerprint: mountId === printedFor ? print : fingerprint(spec.command, mountId, request, checked),
      principal: ctx.principal ?? null,
      correlationId: ctx.correlationId ?? null,
    });
    let begun = await begin(deps, client, spec.paths(req), entryFor(cached.id));
    if (begun === 'missingMount') {
      // The cached mount is gone (deleted, or its key now names a new mount): look again.
      deps.mounts.delete(mountRef);
      cached = await resolveMount(deps.pool, deps.mounts, mountRef);
      begun = await begin(deps, client, spec.paths(req), entryFor(cached.id));
      if (begun === 'missingMount') throw new FilestoreError('MOUNT_NOT_FOUND', `no mount "${mountRef}"`);
    }
    const entry = { id: begun.entryId };
    const mount: Mount = { ...cached, accessMode: begun.accessMode, state: begun.state };
    let step: Step;
    let plan: Plan;
    try {
      // Inside: a backend that cannot be opened (a local root gone) fails the entry, never leaves it pending.
      step = makeStep(client, mount, deps.backends.forMount(mount), entry.id, { covered: begun.covered, nodes: begun.nodes });
      assertWritable(mount);
      plan = await spec.prepare(step, req);
      if (spec.preState) await step.journal(await spec.preState(step, req, plan));
      // Storage that cannot be reached at all (a local root gone) fails the command here, untouched,
      // rather than half way, where nothing can be judged until the root is back.
      await step.backend.ready?.();
      await deps.hooks?.beforeStorage?.(entry.id);
    } catch (err) {
      body?.resume(); // drain an unread upload so the client sees the error, not a stalled socket
      await recordFailure(client, mount, spec.command, entry.id, err);
      await deps.afterCommit(mount.id);
      throw asFilestoreError(err);
    }

    let applied: Applied;
    try {
      applied = await spec.apply(step, req, plan);
    } catch (err) {
      body?.resume();
      const error = asFilestoreError(err);
      const pending = (await findEntry(client, entry.id)) as JournalEntry;
      let decided: 'succeeded' | 'failed';
      try {
        decided = await resolveEntry(step, pending, error, false);
      } catch (unreadable) {
        broken = true; // storage cannot be read now; the entry stays pending for the sweep
        // Why it cannot be read (the mount's root gone: 503, retry) says more than the failed call.
        const why = unreadable instanceof FilestoreError && unreadable.code === 'UNAVAILABLE' ? unreadable : error;
        throw new FilestoreError(why.code, why.message, { ...why.details, journalEntryId: entry.id, pendingRecovery: true });
      }
      if (decided === 'succeeded') deps.ownWrites?.forget(mount.id);
      await deps.afterCommit(mount.id);
      if (decided === 'failed') throw error;
      return (await findEntry(client, entry.id))?.result as CommandResult;
    }
    await deps.hooks?.afterStorage?.(entry.id);

    try {
      const outcome = await spec.observe(step, req, plan, applied);
      const result = await commitCommand(client, step, spec, req, plan, outcome, request, false, `COMMIT; ${RELEASE_ALL_SQL}`);
      released = true;
      deps.statistics?.committed();
      const written = spec.written?.(outcome);
      if (written) deps.ownWrites?.record(mount.id, written.path, written);
      else deps.ownWrites?.forget(mount.id);
      await deps.afterCommit(mount.id);
      return result;
    } catch (err) {
      broken = true;
      throw new FilestoreError(
        'INTERNAL',
        `the change reached storage but could not be recorded; journal entry ${entry.id} stays pending until recovery resolves it`,
        { journalEntryId: entry.id },
      );
    }
  } finally {
    if (broken) {
      client.release(new Error('discard connection: locks must go with it'));
    } else if (released) {
      client.release();
    } else {
      await releaseAll(client).catch(() => {
        broken = true;
      });
      client.release(broken ? new Error('discard connection') : undefined);
    }
  }
}

/**
 * Begins a command (filestore.begin_command): path locks, journal entry `pending` owned by
 * this connection (locked before the row becomes visible, so recovery never mistakes a live
 * command for a dead one), the mount's current mode and state, and the live nodes of its
 * paths and their ancestors. A crashed command still pending on an overlapping path is
 * resolved first — its locks died with it, so without this a command could act on a
 * catalogue that does not yet reflect what the dead one did to storage.
 */
export async function begin(deps: PipelineDeps, client: PoolClient, paths: string[], entry: NewEntry) {
  const locks = pathLocks(entry.mountId, paths);
  const keys = { keys: locks.map((l) => l.key.toString()), exclusive: locks.map((l) => l.mode === 'exclusive') };
  const covered = new Set(paths.flatMap((p) => [...ancestorsOf(p), p]));
  for (let round = 0; ; round++) {
    const begun = await beginCommand(client, entry, keys, paths, [...covered]);
    if (begun.kind === 'missingMount') return 'missingMount' as const;
    if (begun.kind === 'started') return { ...begun, covered };
    if (begun.kind === 'conflict') throw new FilestoreError('IDEMPOTENCY_CONFLICT', 'idempotency key was taken concurrently; retry');
    await release(client, locks);
    if (round === 3) {
      throw new FilestoreError('STORAGE_ERROR', `an interrupted command on this path (journal entry ${begun.staleEntryIds[0]}) is not resolved yet; retry later`);
    }
    for (const id of begun.staleEntryIds) {
      const stale = await findEntry(client, id);
      if (stale && stale.status === 'pending' && uploadOpen(stale)) {
        // Not a crashed command: a presigned upload holds the path until completed or expired.
        throw new FilestoreError('UPLOAD_IN_PROGRESS', `"${String(stale.request.path)}" has an upload in progress (upload ${id}); retry once it is completed or has expired`, {
          journalEntryId: id,
          expiresAt: uploadStateOf(stale)?.expiresAt,
        });
      }
      if (stale?.status === 'pending') await recoverEntry(deps, stale, { client });
    }
  }
}

/**
 * Answers a request whose idempotency key was seen before: the first result, or the first
 * error. Returns null when the command should run again instead (its first attempt failed
 * for a transient reason, and the key has been released for this run).
 */
async function replay(
  deps: PipelineDeps,
  client: PoolClient,
  prior: JournalEntry,
  print: string,
  body?: Readable,
): Promise<CommandResult | null> {
  if (prior.requestFingerprint !== print) {
    body?.resume();
    throw new FilestoreError('IDEMPOTENCY_CONFLICT', 'this Idempotency-Key was used for a different request; use a new key', {
      journalEntryId: prior.id,
    });
  }
  let entry = prior;
  if (entry.status === 'pending') {
    // We hold the key's lock, so the process that wrote this entry is gone (or a recoverer
    // is finishing it): resolve it on this connection, waiting for a recoverer if need be.
    await recoverEntry(deps, entry, { client, wait: true });
    entry = (await findEntry(client, entry.id)) as JournalEntry;
  }
  if (entry.status === 'failed' && TRANSIENT.has(entry.error?.code ?? '')) {
    await releaseIdempotencyKey(client, entry.id);
    return null;
  }
  if (body) {
    const h = createHash('sha256');
    for await (const chunk of body) h.update(chunk as Buffer);
    const recorded = entry.request.contentSha256;
    if (typeof recorded === 'string' && recorded !== h.digest('hex')) {
      throw new FilestoreError('IDEMPOTENCY_CONFLICT', 'this Idempotency-Key was used with different content; use a new key', {
        journalEntryId: entry.id,
      });
    }
  }
  if (entry.status === 'succeeded') return entry.result as CommandResult;
  const e = entry.error ?? { code: 'INTERNAL', message: 'command failed' };
  throw new FilestoreError(e.code as FilestoreError['code'], e.message, e.details);
}
