import type { Queryable } from '../db/pool.ts';
import type { EventType } from './event-types.ts';

export type { EventType };

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

/**
 * Appends events in the caller's transaction: they exist exactly when the change does. Call it
 * after taking the locks that order this change with other writers of the same rows (path
 * locks, the node rows' updates): the publication order of two writers of one path follows
 * the order in which they drew outbox ids (see claimBatch).
 */
export async function appendEvents(q: Queryable, events: NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  // The data travel as one JSON array rather than a json[] literal: the array literal quotes
  // and escapes every JSON text (in JS, and again when PostgreSQL reads it back). The column is
  // json (migration 7): each element is kept as the text it is, no jsonb conversion.
  await q.query(
    `INSERT INTO filestore.outbox (mount_id, type, data)
     SELECT t.mount_id, t.type, d.data
       FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS t(mount_id, type, n)
       JOIN json_array_elements($3::json) WITH ORDINALITY AS d(data, n) ON d.n = t.n
      ORDER BY t.n`,
    [events.map((e) => e.mountId), events.map((e) => e.type), JSON.stringify(events.map((e) => e.data))],
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
 * sequence numbers, in id order: every row visible to this statement, without waiting for
 * any running transaction. The caller holds the relay lock (one publisher at a time), taken
 * in an earlier statement of the same transaction (so this statement's snapshot is taken
 * after the previous holder's claim became visible), publishes the batch, then writes the
 * claim (`markPublishedSql`: seq and published_at, the moment the bus took it) and commits.
 * Nothing is written before the bus accepted the batch: a failed publication leaves the rows
 * as they were (no seq, no published_at) for the next pass.
 *
 * Why waiting for no running transaction keeps at-least-once delivery, increasing seqs,
 * causal order and per-path order: docs/architecture.md, "The relay's claim: the argument".
 */
export async function claimBatch(q: Queryable, limit: number, o: { settingsSent?: boolean } = {}): Promise<ClaimedBatch> {
  // Index scans whatever the statistics say. The statement is prepared once per connection
  // and its generic plan kept: planned while the outbox was near empty (a fresh catalogue, or
  // stale statistics with autovacuum off) it joined the batch to a sequential scan of the
  // whole outbox, 20–570 ms per claim once a burst had filled it. Both probes are index
  // lookups here: the unpublished partial index (in id order, stopping at the limit), then the
  // primary key. Transaction-local (markPublishedSql's join too); the caller's transaction
  // ends with the claim. The seqs are drawn in id order (a subquery with a volatile target
  // list is never flattened); they become visible with the claim's commit, as before.
  // `settingsSent`: the caller sent CLAIM_SETTINGS_SQL earlier in this transaction.
  if (!o.settingsSent) await q.query(CLAIM_SETTINGS_SQL);
  const { rows } = await q.query<ClaimedRow>({ name: 'filestore.outbox.claimBatch', text: claimText('$1', ''), values: [limit] });
  return claimedBatchOf(rows);
}

/**
 * claimBatch as text (simple protocol, sendable with other statements), claiming only when
 * the transaction-local setting `filestore.relay_locked` is 'true' (the relay sets it from its
 * try-lock in an earlier statement of the same round trip; otherwise the claim is empty and
 * draws no seq). Planned at each call, under CLAIM_SETTINGS_SQL sent before it.
 */
export function claimBatchSql(limit: number, withData = true): string {
  if (!Number.isSafeInteger(limit) || limit < 1) throw new TypeError(`claim limit must be a positive integer, not ${String(limit)}`);
  return claimText(String(limit), ` AND current_setting('${RELAY_LOCKED_SETTING}', true) = 'true'`, withData);
}

/**
 * Reads the data of a batch claimed without it (claimBatchSql(…, false)), in the claim's
 * transaction: its rows are the ones the claim saw (the claim changes nothing until its mark).
 */
export async function fillClaimedData(q: Queryable, batch: ClaimedBatch): Promise<void> {
  if (batch.events.length === 0) return;
  const { rows } = await q.query<{ id: number; dataJson: string }>(
    `SELECT id, data::text AS "dataJson" FROM filestore.outbox WHERE id = ANY($1::bigint[])`,
    [batch.ids],
  );
  const byId = new Map(rows.map((r) => [r.id, r.dataJson]));
  batch.events = batch.events.map((e, i) => withData(e, byId.get(batch.ids[i] as number) ?? 'null'));
}

/** The transaction-local setting claimBatchSql's claim is conditional on. */
export const RELAY_LOCKED_SETTING = 'filestore.relay_locked';

// Each claimed row is found again by its id in a LATERAL subquery with LIMIT 1, which
// PostgreSQL cannot flatten into a join: joined, statistics taken while many rows waited (after
// a burst; with autovacuum off nothing analyzes again) planned a hash join that read the whole
// outbox through its primary key on every claim (tests/outbox-claim-dead-rows.test.ts).
function claimText(limit: string, guard: string, withData = true): string {
  return `SELECT next.id, next.seq, o.event_id AS "eventId", o.mount_id AS "mountId", o.type,
            to_char(o.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "occurredAt", ${withData ? 'o.data::text' : 'NULL::text'} AS "dataJson"
       FROM (
         SELECT id, nextval('filestore.outbox_seq') AS seq FROM (
           SELECT id FROM filestore.outbox
            WHERE published_at IS NULL${guard}
            ORDER BY id LIMIT ${limit}
         ) ordered
       ) next
       CROSS JOIN LATERAL (SELECT event_id, mount_id, type, occurred_at, data FROM filestore.outbox o WHERE o.id = next.id LIMIT 1) o`;
}

/** The rows of a claim (claimBatch's statement or claimBatchSql's) as a batch in seq order. */
export function claimedBatchOf(claimed: unknown[]): ClaimedBatch {
  const rows = claimed as ClaimedRow[];
  rows.sort((a, b) => a.seq - b.seq);
  return { events: rows.map(claimedEnvelope), ids: rows.map((r) => r.id), seqs: rows.map((r) => r.seq) };
}

/**
 * The claim's transaction-local settings (see claimBatch), parameterless: sendable with other
 * statements. No bitmap scan either: each published row leaves a dead entry in the unpublished
 * index until a VACUUM, and a bitmap scan visits the heap for every one of them on every claim
 * (7 ms a claim after 20k events with autovacuum off, and growing), while a plain index scan
 * marks the dead entries it meets in the index once and skips them from then on
 * (tests/outbox-claim-dead-rows.test.ts).
 */
export const CLAIM_SETTINGS_SQL = 'SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off';

/** A claimed batch: its envelopes in seq order, and the rows to mark once the bus took them. */
export interface ClaimedBatch {
  events: EventEnvelope[];
  ids: number[];
  seqs: number[];
}

/**
 * The statement that records a claimed batch as published: its seqs, and published_at = when
 * this statement arrived, i.e. after the bus accepted the batch (what the retention counts
 * from). Parameterless, so that the relay sends it with its COMMIT in one round trip; the
 * ids and seqs are integers the claim returned.
 */
export function markPublishedSql(batch: ClaimedBatch): string {
  const list = (xs: number[]) => {
    if (!xs.every(Number.isSafeInteger)) throw new Error('outbox ids and seqs are integers');
    return `'{${xs.join(',')}}'::bigint[]`;
  };
  return `UPDATE filestore.outbox o SET seq = p.seq, published_at = statement_timestamp()
            FROM unnest(${list(batch.ids)}, ${list(batch.seqs)}) AS p(id, seq) WHERE o.id = p.id`;
}

interface ClaimedRow {
  id: number;
  eventId: string;
  mountId: string;
  type: EventType;
  /** As Date.toISOString() writes it (milliseconds, truncated as a pg Date is). */
  occurredAt: string;
  /** Null when claimed without the data (claimBatchSql(…, false)). */
  dataJson: string | null;
  seq: number;
}

const DATA_JSON = Symbol('filestore.dataJson');
type Claimed = EventEnvelope & { readonly [DATA_JSON]?: string | null };

/**
 * An envelope the relay claimed, as read: `data` stays JSON text until someone reads it
 * (parsed once, then kept), and goes to Redis as that text (`envelopeJson`). The relay
 * publishes every event a process writes; parsing each one's data and serialising it again
 * cost the agent's thread ~30 µs per event in a burst of discoveries.
 */
function claimedEnvelope(r: ClaimedRow): EventEnvelope {
  // Claimed without its data: nobody in this process reads it (see the relay). A plain
  // instance, not two defineProperty calls per event (a quarter of the relay's time then).
  if (r.dataJson === null) return new UnreadEnvelope(r);
  return withData({ id: r.eventId, seq: r.seq, type: r.type, occurredAt: r.occurredAt, mountId: r.mountId } as EventEnvelope, r.dataJson);
}

/** An event claimed without its data (claimBatchSql(…, false)); fillClaimedData gives it its data. */
class UnreadEnvelope implements EventEnvelope {
  readonly id: string;
  readonly seq: number;
  readonly type: EventType;
  readonly occurredAt: string;
  readonly mountId: string;
  constructor(r: ClaimedRow) {
    this.id = r.eventId;
    this.seq = r.seq;
    this.type = r.type;
    this.occurredAt = r.occurredAt;
    this.mountId = r.mountId;
  }
  get data(): Record<string, unknown> {
    throw new Error(`event ${this.id} was claimed without its data`);
  }
}

/**
 * The envelope `head` with `dataJson` as its data, parsed on first read. Claimed without its
 * data (null: nobody in the process listened), reading it is a bug of the relay: it throws.
 */
function withData(head: EventEnvelope, dataJson: string | null): EventEnvelope {
  const e = { id: head.id, seq: head.seq, type: head.type, occurredAt: head.occurredAt, mountId: head.mountId } as EventEnvelope;
  // Read-only: what was published is what the bus carried.
  let parsed: Record<string, unknown> | undefined;
  Object.defineProperty(e, 'data', {
    enumerable: true,
    get: () => {
      if (dataJson === null) throw new Error(`event ${head.id} was claimed without its data`);
      return (parsed ??= JSON.parse(dataJson) as Record<string, unknown>);
    },
  });
  Object.defineProperty(e, DATA_JSON, { value: dataJson });
  return e;
}

/** The envelope as one JSON text (what the bus carries): a claimed one's data as it was read. */
export function envelopeJson(e: EventEnvelope): string {
  const raw = (e as Claimed)[DATA_JSON];
  if (raw === undefined || raw === null) return JSON.stringify(e);
  const head = JSON.stringify({ id: e.id, seq: e.seq, type: e.type, occurredAt: e.occurredAt, mountId: e.mountId });
  return `${head.slice(0, -1)},"data":${raw}}`;
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

/**
 * The highest publication sequence number so far (0 before the first event), pruned ones
 * included: a stream started on an outbox the retention emptied starts after them, so that
 * resuming from its position is not taken for a resume point that expired.
 */
export async function lastPublishedSeq(q: Queryable): Promise<number> {
  const { rows } = await q.query<{ seq: number | null }>(
    'SELECT greatest((SELECT max(seq) FROM filestore.outbox), (SELECT through_seq FROM filestore.outbox_pruned)) AS seq',
  );
  return rows[0]?.seq ?? 0;
}
