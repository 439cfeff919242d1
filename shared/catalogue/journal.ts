import type { Queryable } from '../db/pool.ts';
import { reviveNode } from './rows.ts';
import type { CatalogueNode } from './types.ts';

export type CommandName = 'mkdir' | 'writeFile' | 'move' | 'copy' | 'delete' | 'updateMetadata';
export type JournalStatus = 'pending' | 'succeeded' | 'failed';

export interface JournalEntry {
  id: number;
  mountId: string;
  command: CommandName;
  status: JournalStatus;
  idempotencyKey: string | null;
  requestFingerprint: string | null;
  request: Record<string, unknown>;
  result: Record<string, unknown> | null;
  error: { code: string; message: string; details?: Record<string, unknown> } | null;
  principal: string | null;
  correlationId: string | null;
  recovered: boolean;
  createdAt: Date;
  startedAt: Date;
  finishedAt: Date | null;
}

const COLUMNS = `id, mount_id AS "mountId", command, status, idempotency_key AS "idempotencyKey",
  request_fingerprint AS "requestFingerprint", request, result, error, principal,
  correlation_id AS "correlationId", recovered, created_at AS "createdAt", started_at AS "startedAt",
  finished_at AS "finishedAt"`;

export interface NewEntry {
  mountId: string;
  command: CommandName;
  request: Record<string, unknown>;
  idempotencyKey: string | null;
  requestFingerprint: string | null;
  principal: string | null;
  correlationId: string | null;
}

export type BeginOutcome =
  | { kind: 'missingMount' }
  | { kind: 'stale'; staleEntryIds: number[] }
  | { kind: 'conflict' }
  | { kind: 'started'; entryId: number; accessMode: 'rw' | 'ro'; state: 'active' | 'paused'; nodes: CatalogueNode[] };

/**
 * filestore.begin_command: path locks (given as keys and modes), a check for crashed
 * commands pending on overlapping `paths`, the pending entry owned by this session, the
 * mount's current mode and state, and the live nodes at `lookup` — one round trip.
 */
export async function beginCommand(
  q: Queryable,
  e: NewEntry,
  locks: { keys: string[]; exclusive: boolean[] },
  paths: string[],
  lookup: string[],
): Promise<BeginOutcome> {
  const { rows } = await q.query<{ r: Record<string, unknown> }>({
    name: 'filestore.journal.beginCommand',
    text: `SELECT filestore.begin_command($1::bigint[], $2::boolean[], $3::uuid, $4::text[], $5::text[],
                                          $6, $7::jsonb, $8, $9, $10, $11) AS r`,
    values: [
      locks.keys,
      locks.exclusive,
      e.mountId,
      paths,
      lookup,
      e.command,
      JSON.stringify(e.request),
      e.idempotencyKey,
      e.requestFingerprint,
      e.principal,
      e.correlationId,
    ],
  });
  const r = rows[0]?.r ?? {};
  if (r.missingMount) return { kind: 'missingMount' };
  if (Array.isArray(r.stale)) return { kind: 'stale', staleEntryIds: (r.stale as unknown[]).map(Number) };
  if (r.conflict) return { kind: 'conflict' };
  const mount = r.mount as { accessMode: 'rw' | 'ro'; state: 'active' | 'paused' };
  return {
    kind: 'started',
    entryId: Number(r.entryId),
    accessMode: mount.accessMode,
    state: mount.state,
    nodes: (r.nodes as Record<string, unknown>[]).map(reviveNode),
  };
}

/** The entry `principal` sent under `key`: keys are scoped per principal (null: the orchestrator called directly). */
export async function findByIdempotencyKey(q: Queryable, principal: string | null, key: string): Promise<JournalEntry | null> {
  const { rows } = await q.query<JournalEntry>(
    `SELECT ${COLUMNS} FROM filestore.journal_entries WHERE coalesce(principal, '') = $1 AND idempotency_key = $2`,
    [principal ?? '', key],
  );
  return rows[0] ?? null;
}

export async function findEntry(q: Queryable, id: number): Promise<JournalEntry | null> {
  const { rows } = await q.query<JournalEntry>(`SELECT ${COLUMNS} FROM filestore.journal_entries WHERE id = $1`, [id]);
  return rows[0] ?? null;
}

export type EntryOutcome =
  | { status: 'succeeded'; result: Record<string, unknown> }
  | { status: 'failed'; error: { code: string; message: string; details?: Record<string, unknown> } };

export interface OutboxEvent {
  type: string;
  mountId: string;
  data: Record<string, unknown>;
}

/**
 * Moves a pending entry to its final status and appends its events, in one statement (run
 * it inside the transaction of the change). Only a pending entry moves; returns false (and
 * appends nothing) when the entry was already final. The caller holds the command's path
 * locks until after COMMIT (pipeline, recovery), so the events of two commands on one path
 * draw their outbox ids in commit order — what the relay's ordering rests on (claimBatch).
 */
export async function finishEntry(
  q: Queryable,
  id: number,
  outcome: EntryOutcome,
  events: OutboxEvent[],
  recovered = false,
): Promise<boolean> {
  const { rows } = await q.query<{ finished: number }>({
    name: 'filestore.journal.finishEntry',
    text: `WITH f AS (
             UPDATE filestore.journal_entries
                SET status = $2, result = $3, error = $4, finished_at = now(), recovered = $5
              WHERE id = $1 AND status = 'pending'
              RETURNING id
           ), ev AS (
             INSERT INTO filestore.outbox (mount_id, type, data)
             SELECT t.mount_id, t.type, t.data
               FROM unnest($6::uuid[], $7::text[], $8::json[]) WITH ORDINALITY AS t(mount_id, type, data, n)
              WHERE EXISTS (SELECT 1 FROM f)
              ORDER BY t.n
           )
           SELECT count(*)::int AS finished FROM f`,
    values: [
      id,
      outcome.status,
      outcome.status === 'succeeded' ? JSON.stringify(outcome.result) : null,
      outcome.status === 'failed' ? JSON.stringify(outcome.error) : null,
      recovered,
      events.map((e) => e.mountId),
      events.map((e) => e.type),
      events.map((e) => JSON.stringify(e.data)),
    ],
  });
  return rows[0]?.finished === 1;
}

/** Pending entries after `afterId`, oldest first. */
export async function listPending(q: Queryable, afterId = 0, limit = 100): Promise<JournalEntry[]> {
  const { rows } = await q.query<JournalEntry>(
    `SELECT ${COLUMNS} FROM filestore.journal_entries WHERE status = 'pending' AND id > $1 ORDER BY id LIMIT $2`,
    [afterId, limit],
  );
  return rows;
}

/** Adds facts to a pending entry's request (what recovery needs to judge storage). */
export async function patchRequest(q: Queryable, id: number, patch: Record<string, unknown>): Promise<void> {
  await q.query({
    name: 'filestore.journal.patchRequest',
    text: `UPDATE filestore.journal_entries SET request = request || $2::jsonb WHERE id = $1`,
    values: [id, JSON.stringify(patch)],
  });
}

/**
 * Frees an idempotency key whose command failed for a transient reason, so a retry with the
 * same key runs again; the old entry keeps the key in its request for the record.
 */
export async function releaseIdempotencyKey(q: Queryable, id: number): Promise<void> {
  await q.query(
    `UPDATE filestore.journal_entries
        SET request = request || jsonb_build_object('retriedIdempotencyKey', idempotency_key), idempotency_key = NULL
      WHERE id = $1`,
    [id],
  );
}

/** Entries after `afterId`, oldest first: of one mount (or every mount), of one status (or all). */
export async function listJournal(
  q: Queryable,
  mountId: string | null,
  afterId: number,
  limit: number,
  status: JournalStatus | null = null,
): Promise<JournalEntry[]> {
  const { rows } = await q.query<JournalEntry>(
    `SELECT ${COLUMNS} FROM filestore.journal_entries
      WHERE ($1::uuid IS NULL OR mount_id = $1) AND ($4::text IS NULL OR status = $4) AND id > $2
      ORDER BY id LIMIT $3`,
    [mountId, afterId, limit, status],
  );
  return rows;
}

/** Of `ids`, the entries of `mountId` that are finished (succeeded or failed): whatever they staged is garbage. */
export async function finishedEntryIds(q: Queryable, mountId: string, ids: number[]): Promise<Set<number>> {
  const { rows } = await q.query<{ id: string }>(
    `SELECT id FROM filestore.journal_entries WHERE id = ANY($1::bigint[]) AND mount_id = $2 AND status <> 'pending'`,
    [ids, mountId],
  );
  return new Set(rows.map((r) => Number(r.id)));
}
