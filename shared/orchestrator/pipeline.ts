import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { BackendRegistry } from '../backends/registry.ts';
import type { Pool, PoolClient } from '../db/pool.ts';
import { inTransaction } from '../db/pool.ts';
import { FilestoreError, asFilestoreError } from '../errors.ts';
import { findByIdempotencyKey, finishEntry, insertPending, type JournalEntry } from '../catalogue/journal.ts';
import { getMount } from '../catalogue/mounts.ts';
import { appendEvents } from '../catalogue/outbox.ts';
import type { Mount } from '../catalogue/types.ts';
import { acquire, lockEntry, lockIdempotencyKey, pathLocks, releaseAll } from './locks.ts';
import type { CommandContext, CommandResult, CommandSpec, OrchestratorHooks, Step } from './context.ts';
import { assertWritable } from './checks.ts';

export interface PipelineDeps {
  pool: Pool;
  backends: BackendRegistry;
  hooks?: OrchestratorHooks | undefined;
  /** Called after every commit that changed a mount (cache invalidation, relay nudge). */
  afterCommit(mountId: string): Promise<void>;
  /** Resolves a pending entry whose owner died (recovery.ts). */
  recoverEntry(entry: JournalEntry): Promise<void>;
}

/** sha256 over the command and its canonical request: what makes two requests "the same". */
export function fingerprint(command: string, mountId: string, request: Record<string, unknown>): string {
  const canonical = (v: unknown): unknown =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v as object).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]))
      : v;
  return createHash('sha256').update(JSON.stringify([command, mountId, canonical(request)])).digest('hex');
}

async function hashStream(body: Readable): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of body) h.update(chunk as Buffer);
  return h.digest('hex');
}

function replayOutcome(entry: JournalEntry): CommandResult {
  if (entry.status === 'succeeded') return entry.result as CommandResult;
  const e = entry.error ?? { code: 'INTERNAL', message: 'command failed' };
  throw new FilestoreError(e.code as FilestoreError['code'], e.message, e.details);
}

/**
 * Runs one command: idempotency → path locks → journal `pending` (committed) → prepare →
 * storage → one transaction for catalogue + journal `succeeded` + outbox. A failure before
 * storage succeeded marks the entry `failed` (with an event) and leaves the catalogue as it
 * was. A failure after storage succeeded leaves the entry `pending` for recovery, which
 * compares storage with the catalogue; the connection (and with it every lock) is dropped.
 */
export async function runCommand<Req, Plan, Outcome>(
  deps: PipelineDeps,
  spec: CommandSpec<Req, Plan, Outcome>,
  mountRef: string,
  req: Req,
  ctx: CommandContext,
  body?: Readable,
): Promise<CommandResult> {
  const mount = await getMount(deps.pool, mountRef);
  const request = spec.journalRequest(req);
  const print = fingerprint(spec.command, mount.id, request);
  const client = await deps.pool.connect();
  let broken = false;
  try {
    if (ctx.idempotencyKey) {
      await lockIdempotencyKey(client, ctx.idempotencyKey);
      const prior = await findByIdempotencyKey(client, ctx.idempotencyKey);
      if (prior) return await replay(deps, prior, print, body);
    }
    await acquire(client, pathLocks(mount.id, spec.paths(req)));
    const entry = await inTransaction(client, async () => {
      const e = await insertPending(client, {
        mountId: mount.id,
        command: spec.command,
        request,
        idempotencyKey: ctx.idempotencyKey ?? null,
        requestFingerprint: print,
        principal: ctx.principal ?? null,
        correlationId: ctx.correlationId ?? null,
      });
      if (!e) throw new FilestoreError('IDEMPOTENCY_CONFLICT', 'idempotency key was taken concurrently; retry');
      // Locked before the row becomes visible: recovery never mistakes a live command for a dead one.
      await lockEntry(client, e.id);
      return e;
    });
    const step: Step = { q: client, mount, backend: deps.backends.forMount(mount), entryId: entry.id };

    let plan: Plan;
    let outcome: Outcome;
    try {
      assertWritable(mount);
      plan = await spec.prepare(step, req);
      await deps.hooks?.beforeStorage?.(entry.id);
      outcome = await spec.apply(step, req, plan);
    } catch (err) {
      body?.resume(); // drain an unread upload so the client sees the error, not a stalled socket
      await recordFailure(client, mount, spec.command, entry.id, err);
      await deps.afterCommit(mount.id);
      throw err instanceof FilestoreError ? err : asFilestoreError(err);
    }
    await deps.hooks?.afterStorage?.(entry.id);

    try {
      const result = await commitCommand(client, step, spec, req, plan, outcome, request);
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
    } else {
      await releaseAll(client).catch(() => {
        broken = true;
      });
      client.release(broken ? new Error('discard connection') : undefined);
    }
  }
}

/** writeFile journals the content's sha256 so a replay can tell "same bytes" from "different bytes". */
function contentPatch(outcome: unknown): Record<string, unknown> | null {
  const sha = (outcome as { write?: { sha256?: string } } | null)?.write?.sha256;
  return sha ? { contentSha256: sha } : null;
}

async function replay(deps: PipelineDeps, prior: JournalEntry, print: string, body?: Readable): Promise<CommandResult> {
  if (prior.requestFingerprint !== print) {
    body?.resume();
    throw new FilestoreError('IDEMPOTENCY_CONFLICT', 'this Idempotency-Key was used for a different request; use a new key', {
      journalEntryId: prior.id,
    });
  }
  if (body) {
    const sha = await hashStream(body);
    const recorded = prior.request.contentSha256;
    if (typeof recorded === 'string' && recorded !== sha) {
      throw new FilestoreError('IDEMPOTENCY_CONFLICT', 'this Idempotency-Key was used with different content; use a new key', {
        journalEntryId: prior.id,
      });
    }
  }
  if (prior.status === 'pending') {
    // We hold the key's lock, so the process that wrote this entry is gone: resolve it now.
    await deps.recoverEntry(prior);
    const resolved = await findByIdempotencyKey(deps.pool, prior.idempotencyKey as string);
    return replayOutcome(resolved as JournalEntry);
  }
  return replayOutcome(prior);
}

/** The success transaction: catalogue changes, journal `succeeded`, events. Shared with recovery. */
export async function commitCommand<Req, Plan, Outcome>(
  client: PoolClient,
  step: Step,
  spec: CommandSpec<Req, Plan, Outcome>,
  req: Req,
  plan: Plan,
  outcome: Outcome,
  request: Record<string, unknown>,
  recovered = false,
): Promise<CommandResult> {
  return inTransaction(client, async () => {
    const { result, events } = await spec.commit(step, req, plan, outcome);
    const patch = contentPatch(outcome);
    const finished = await finishEntry(client, step.entryId, { status: 'succeeded', result }, { recovered, ...(patch ? { requestPatch: patch } : {}) });
    if (!finished) throw new Error(`journal entry ${step.entryId} is no longer pending`);
    await appendEvents(client, [
      ...events,
      {
        type: 'filestore.command.completed',
        mountId: step.mount.id,
        data: { journalEntryId: step.entryId, command: spec.command, status: 'succeeded', request, recovered },
      },
    ]);
    return result;
  });
}

/** The failure transaction: journal `failed` with the error, and its event. Shared with recovery. */
export async function recordFailure(
  client: PoolClient,
  mount: Mount,
  command: string,
  entryId: number,
  err: unknown,
  recovered = false,
): Promise<void> {
  const error = asFilestoreError(err).toJSON();
  await inTransaction(client, async () => {
    await finishEntry(client, entryId, { status: 'failed', error }, { recovered });
    await appendEvents(client, [
      {
        type: 'filestore.command.completed',
        mountId: mount.id,
        data: { journalEntryId: entryId, command, status: 'failed', error, recovered },
      },
    ]);
  });
}
