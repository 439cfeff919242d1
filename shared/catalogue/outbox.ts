import type { Queryable } from '../db/pool.ts';

export type EventType =
  | 'filestore.node.created'
  | 'filestore.node.updated'
  | 'filestore.node.moved'
  | 'filestore.node.copied'
  | 'filestore.node.deleted'
  | 'filestore.command.completed'
  | 'filestore.drift.detected'
  | 'filestore.node.reconciled'
  | 'filestore.node.missing';

/** The envelope of SPEC §5. `seq` is the outbox publication sequence (SSE ids, resumption). */
export interface EventEnvelope {
  id: string;
  seq: number;
  type: EventType;
  occurredAt: string;
  mountId: string;
  data: Record<string, unknown>;
}

export interface NewEvent {
  type: EventType;
  mountId: string;
  data: Record<string, unknown>;
}

/** Appends events in the caller's transaction: they exist exactly when the change does. */
export async function appendEvents(q: Queryable, events: NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  await q.query(
    `INSERT INTO filestore.outbox (mount_id, type, data)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])`,
    [events.map((e) => e.mountId), events.map((e) => e.type), events.map((e) => JSON.stringify(e.data))],
  );
}

interface OutboxRow {
  id: number;
  eventId: string;
  mountId: string;
  type: EventType;
  occurredAt: Date;
  data: Record<string, unknown>;
}

const toEnvelope = (r: OutboxRow & { seq: number }): EventEnvelope => ({
  id: r.eventId,
  seq: r.seq,
  type: r.type,
  occurredAt: r.occurredAt.toISOString(),
  mountId: r.mountId,
  data: r.data,
});

/**
 * Claims the next batch of committed, unpublished events and gives them publication
 * sequence numbers, in id order. Only rows whose transaction is older than every running
 * transaction (txid < snapshot xmin) are taken, so a slow transaction that inserted a lower
 * id is never overtaken by a later one in the same mount. The caller holds the relay lock
 * (one publisher at a time), taken in an earlier statement of the same transaction, and
 * publishes the batch before committing the claim.
 */
export async function claimBatch(q: Queryable, limit: number): Promise<EventEnvelope[]> {
  const { rows } = await q.query<OutboxRow & { seq: number }>({
    name: 'filestore.outbox.claimBatch',
    text: `WITH next AS (
       SELECT id, nextval('filestore.outbox_seq') AS seq FROM (
         SELECT id FROM filestore.outbox
          WHERE published_at IS NULL AND txid < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY id LIMIT $1
       ) ordered
     )
     UPDATE filestore.outbox o SET published_at = now(), seq = next.seq
       FROM next WHERE o.id = next.id
     RETURNING o.id, o.event_id AS "eventId", o.mount_id AS "mountId", o.type, o.occurred_at AS "occurredAt", o.data, o.seq`,
    values: [limit],
  });
  return rows.sort((a, b) => a.seq - b.seq).map(toEnvelope);
}

/** Published events after a sequence number, for resuming a stream without gaps. */
export async function eventsAfter(q: Queryable, afterSeq: number, limit: number, mountId?: string): Promise<EventEnvelope[]> {
  const { rows } = await q.query<OutboxRow & { seq: number }>(
    `SELECT event_id AS "eventId", mount_id AS "mountId", type, occurred_at AS "occurredAt", data, seq
       FROM filestore.outbox WHERE seq > $1 AND ($3::uuid IS NULL OR mount_id = $3) ORDER BY seq LIMIT $2`,
    [afterSeq, limit, mountId ?? null],
  );
  return rows.map(toEnvelope);
}

/** The highest publication sequence number so far (0 before the first event). */
export async function lastPublishedSeq(q: Queryable): Promise<number> {
  const { rows } = await q.query<{ seq: number | null }>('SELECT max(seq) AS seq FROM filestore.outbox');
  return rows[0]?.seq ?? 0;
}
