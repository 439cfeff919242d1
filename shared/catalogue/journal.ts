import type { Queryable } from '../db/pool.ts';

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

/** Inserts a pending entry; returns null when the idempotency key is taken (caller replays). */
export async function insertPending(q: Queryable, e: NewEntry): Promise<JournalEntry | null> {
  const { rows } = await q.query<JournalEntry>(
    `INSERT INTO filestore.journal_entries
       (mount_id, command, request, idempotency_key, request_fingerprint, principal, correlation_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
     RETURNING ${COLUMNS}`,
    [e.mountId, e.command, JSON.stringify(e.request), e.idempotencyKey, e.requestFingerprint, e.principal, e.correlationId],
  );
  return rows[0] ?? null;
}

export async function findByIdempotencyKey(q: Queryable, key: string): Promise<JournalEntry | null> {
  const { rows } = await q.query<JournalEntry>(
    `SELECT ${COLUMNS} FROM filestore.journal_entries WHERE idempotency_key = $1`,
    [key],
  );
  return rows[0] ?? null;
}

export async function findEntry(q: Queryable, id: number): Promise<JournalEntry | null> {
  const { rows } = await q.query<JournalEntry>(`SELECT ${COLUMNS} FROM filestore.journal_entries WHERE id = $1`, [id]);
  return rows[0] ?? null;
}

/** Moves a pending entry to its final status. Only a pending entry moves: a second finisher is a no-op. */
export async function finishEntry(
  q: Queryable,
  id: number,
  outcome:
    | { status: 'succeeded'; result: Record<string, unknown> }
    | { status: 'failed'; error: { code: string; message: string; details?: Record<string, unknown> } },
  extra: { recovered?: boolean; requestPatch?: Record<string, unknown> } = {},
): Promise<boolean> {
  const { rowCount } = await q.query(
    `UPDATE filestore.journal_entries
        SET status = $2, result = $3, error = $4, finished_at = now(), recovered = $5,
            request = request || $6::jsonb
      WHERE id = $1 AND status = 'pending'`,
    [
      id,
      outcome.status,
      outcome.status === 'succeeded' ? JSON.stringify(outcome.result) : null,
      outcome.status === 'failed' ? JSON.stringify(outcome.error) : null,
      extra.recovered ?? false,
      JSON.stringify(extra.requestPatch ?? {}),
    ],
  );
  return rowCount === 1;
}

/** Pending entries after `afterId`, oldest first. */
export async function listPending(q: Queryable, afterId = 0, limit = 100): Promise<JournalEntry[]> {
  const { rows } = await q.query<JournalEntry>(
    `SELECT ${COLUMNS} FROM filestore.journal_entries WHERE status = 'pending' AND id > $1 ORDER BY id LIMIT $2`,
    [afterId, limit],
  );
  return rows;
}

/** Pending entries of a mount (normally only the commands running right now). */
export async function listPendingOfMount(q: Queryable, mountId: string): Promise<JournalEntry[]> {
  const { rows } = await q.query<JournalEntry>(
    `SELECT ${COLUMNS} FROM filestore.journal_entries WHERE status = 'pending' AND mount_id = $1 ORDER BY id`,
    [mountId],
  );
  return rows;
}

/** Adds facts to a pending entry's request (what recovery needs to judge storage). */
export async function patchRequest(q: Queryable, id: number, patch: Record<string, unknown>): Promise<void> {
  await q.query(`UPDATE filestore.journal_entries SET request = request || $2::jsonb WHERE id = $1`, [id, JSON.stringify(patch)]);
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

export async function listJournal(q: Queryable, mountId: string, afterId: number, limit: number): Promise<JournalEntry[]> {
  const { rows } = await q.query<JournalEntry>(
    `SELECT ${COLUMNS} FROM filestore.journal_entries WHERE mount_id = $1 AND id > $2 ORDER BY id LIMIT $3`,
    [mountId, afterId, limit],
  );
  return rows;
}
