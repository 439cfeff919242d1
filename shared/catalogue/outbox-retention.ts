import type { Pool, Queryable } from '../db/pool.ts';

/** FILESTORE_OUTBOX_RETENTION's default: published events are kept for 7 days. */
export const DEFAULT_OUTBOX_RETENTION_MS = 7 * 86_400_000;

// Session advisory lock: one process prunes at a time (the others' maintenance skips it).
export const OUTBOX_PRUNE_LOCK = 4_242_003;

const BATCH = 10_000;

export interface OutboxPruned {
  /** Rows deleted by this call. */
  deleted: number;
  /** The highest seq ever pruned: an event stream cannot resume after an earlier event. */
  prunedThrough: number;
}

/**
 * Deletes published events older than `retentionMs`, oldest first, `batchSize` (10,000) per
 * statement, each statement its own transaction, until a batch comes back short; records the
 * highest deleted seq in `outbox_pruned` in the same statement. Unpublished rows (no seq, no
 * published_at) are never touched.
 *
 * Rows are taken in seq order through the seq index (no index on published_at: that would
 * cost every published event another index entry). published_at grows with seq — one relay
 * publishes at a time and stamps each batch when the bus took it — so the old rows are a
 * prefix of the seq order; a batch also checks each row's published_at. (Were the database's
 * clock set back, younger rows at the front would hold older ones behind them for as long
 * as it was set back: pruning waits, it never deletes a row inside the window.)
 *
 * Cheap when nothing is due: one statement, an index probe for the oldest published row.
 */
export async function pruneOutbox(pool: Pool, o: { retentionMs: number; batchSize?: number | undefined }): Promise<OutboxPruned> {
  const batch = o.batchSize ?? BATCH;
  if (!Number.isSafeInteger(batch) || batch < 1) throw new Error(`batchSize must be a positive integer, got ${batch}`);
  if (!(o.retentionMs >= 0)) throw new Error(`retentionMs must be a number of milliseconds, got ${o.retentionMs}`);
  const { rows } = await pool.query<{ due: boolean | null; through: number }>(
    `SELECT (SELECT through_seq FROM filestore.outbox_pruned) AS through,
            (SELECT published_at < now() - $1::float8 * interval '1 millisecond'
               FROM filestore.outbox WHERE seq IS NOT NULL ORDER BY seq LIMIT 1) AS due`,
    [o.retentionMs],
  );
  let prunedThrough = rows[0]?.through ?? 0;
  if (!rows[0]?.due) return { deleted: 0, prunedThrough };

  const client = await pool.connect();
  let locked = false;
  try {
    locked = (await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [OUTBOX_PRUNE_LOCK])).rows[0]?.locked === true;
    if (!locked) return { deleted: 0, prunedThrough };
    let deleted = 0;
    for (;;) {
      // The batch size is inlined (an integer, checked above): the generic plan of a
      // parameterised LIMIT could choose a scan of the whole outbox.
      const { rows: done } = await client.query<{ n: number; through: number }>(
        `WITH gone AS (
           DELETE FROM filestore.outbox
            WHERE id = ANY (ARRAY(SELECT id FROM filestore.outbox WHERE seq IS NOT NULL ORDER BY seq LIMIT ${batch}))
              AND published_at < now() - $1::float8 * interval '1 millisecond'
           RETURNING seq
         ), top AS (SELECT max(seq) AS seq, count(*)::int AS n FROM gone)
         UPDATE filestore.outbox_pruned p SET through_seq = greatest(p.through_seq, top.seq)
           FROM top WHERE top.n > 0
         RETURNING top.n AS n, p.through_seq AS through`,
        [o.retentionMs],
      );
      const n = done[0]?.n ?? 0;
      if (done[0]) prunedThrough = done[0].through;
      deleted += n;
      if (n < batch) return { deleted, prunedThrough };
    }
  } finally {
    // A connection that cannot unlock is dropped (its session, and the lock, end with it).
    let broken: Error | undefined;
    if (locked) await client.query('SELECT pg_advisory_unlock($1)', [OUTBOX_PRUNE_LOCK]).catch((e: Error) => (broken = e));
    client.release(broken);
  }
}

/** The highest seq pruned so far (0 when nothing was): resuming after an earlier event is impossible. */
export async function prunedThrough(q: Queryable): Promise<number> {
  const { rows } = await q.query<{ seq: number }>('SELECT through_seq AS seq FROM filestore.outbox_pruned');
  return rows[0]?.seq ?? 0;
}
