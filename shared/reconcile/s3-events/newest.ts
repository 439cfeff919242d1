import { lit } from '../../catalogue/inline-writes.ts';
import { MOUNT_COLUMNS } from '../../catalogue/rows.ts';
import type { Mount } from '../../catalogue/types.ts';
import type { Queryable } from '../../db/pool.ts';
import type { DriftChange } from '../drift.ts';
import { compareSequencers, isNewerSequencer } from '../sequencer.ts';
import { MountIndex } from './keys.ts';

/** One key of one mount as a batch reports it: its newest event. */
export interface KeyChange {
  path: string;
  change: DriftChange;
  /** The newest sequencer the batch carries for the key (undefined: its events carried none). */
  sequencer: string | undefined;
  /** Size and ETag the newest event reports for a created object (schema.ts `reported`). */
  reported?: { sizeBytes: number; etag: string } | undefined;
}

/** What the catalogue holds for a key's live node, as the batch's first statement read it. */
export interface StoredNode {
  id: number;
  sequencer: string | null;
  kind: string;
  /** size_bytes as text (bigint). */
  size: string | null;
  etag: string | null;
  state: string;
}

/** A key whose newest event reports the version its live node records: its check and sequencer alone are written. */
export interface RecordedKey {
  path: string;
  id: number;
  sequencer: string | undefined;
}

/**
 * Folds the events of a batch into the newest per key: duplicates (equal sequencers) and older
 * events of the same key are subsumed by the newest, whose HEAD sees at least as late a state.
 * An event without a sequencer never hides one with it.
 */
export function newestPerKey(events: Iterable<KeyChange>): Map<string, KeyChange> {
  const newest = new Map<string, KeyChange>();
  for (const e of events) {
    const held = newest.get(e.path);
    if (held === undefined || (e.sequencer !== undefined && (held.sequencer === undefined || compareSequencers(e.sequencer, held.sequencer) > 0))) newest.set(e.path, e);
  }
  return newest;
}

export interface Sorted {
  /** Keys only a look at storage can settle. */
  kept: KeyChange[];
  /** Keys whose newest event is not newer than their node's stored sequencer. */
  dropped: string[];
  /** Keys whose newest event reports what their live node records. */
  recorded: RecordedKey[];
  now: Date;
}

/**
 * Sorts a mount's keys by what their live nodes say (dropStored), reading the nodes with the
 * database's clock first (the batch's other mounts: the first one's were read with the mounts).
 */
export async function dropApplied(q: Queryable, mountId: string, keys: ReadonlyMap<string, KeyChange>): Promise<Sorted> {
  const { stored, now } = await storedNodes(q, mountId, [...keys.keys()]);
  return dropStored(keys, stored, now);
}

/**
 * Sorts the newest event of each key by what its live node (`stored`; absent: no live node
 * known) says:
 * - dropped: the event is not newer than the sequencer the node stored (already applied, or
 *   found as recorded: a redelivery, a late older event);
 * - recorded: the event reports a created object of the size and ETag the node, an ACTIVE
 *   file, records (Filestore's own write, seen again: most events). The event names the
 *   version it is about, and that version is the catalogue's: whatever happened to the key
 *   after it is announced by a later event (a higher sequencer), so a look at storage would
 *   tell nothing this event is about. Drift detection (drift.ts) asks of a HEAD exactly this
 *   (the S3 strategy's `differs`: size and ETag);
 * - kept: the rest, for a look at storage (no live node, a deletion, an event without size
 *   and ETag, a record that differs, a node INCONSISTENT or MISSING).
 */
export function dropStored(keys: ReadonlyMap<string, KeyChange>, stored: ReadonlyMap<string, StoredNode>, now: Date): Sorted {
  const kept: KeyChange[] = [];
  const dropped: string[] = [];
  const recorded: RecordedKey[] = [];
  for (const k of keys.values()) {
    const node = stored.get(k.path);
    if (k.sequencer !== undefined && node !== undefined && !isNewerSequencer(k.sequencer, node.sequencer)) dropped.push(k.path);
    else if (node !== undefined && reportsRecord(k, node)) recorded.push({ path: k.path, id: node.id, sequencer: k.sequencer });
    else kept.push(k);
  }
  return { kept, dropped, recorded, now };
}

function reportsRecord(k: KeyChange, node: StoredNode): boolean {
  const r = k.change === 'created' ? k.reported : undefined;
  return r !== undefined && node.kind === 'file' && node.state === 'ACTIVE' && node.size === String(r.sizeBytes) && node.etag === r.etag;
}

/** The columns of a live node dropStored needs (alias n). */
const STORED_COLUMNS = `n.id::float8 AS id, n.sequencer, n.kind, n.size_bytes::text AS size, n.etag, n.consistency_state AS state`;

interface StoredRow extends StoredNode {
  now: Date;
  path: string | null;
}

function storedNode(r: StoredRow): StoredNode {
  return { id: r.id, sequencer: r.sequencer, kind: r.kind, size: r.size, etag: r.etag, state: r.state };
}

/**
 * The keys' live nodes (dropStored's columns) and the database's now() in one statement: the
 * time taken before the batch's look at storage that detectDrift needs (DriftBatch.since).
 */
async function storedNodes(q: Queryable, mountId: string, paths: string[]): Promise<{ stored: Map<string, StoredNode>; now: Date }> {
  const { rows } = await q.query<StoredRow>({
    name: 'filestore.s3events.storedNodes',
    text: `SELECT now() AS now, n.path, ${STORED_COLUMNS}
             FROM (SELECT 1) AS one
             LEFT JOIN filestore.nodes n ON n.mount_id = $1 AND n.path = ANY($2::text[]) AND n.deleted_at IS NULL`,
    values: [mountId, paths],
  });
  const stored = new Map<string, StoredNode>();
  for (const r of rows) if (r.path !== null) stored.set(r.path, storedNode(r));
  return { stored, now: (rows[0] as { now: Date }).now };
}

/** The live nodes of a batch's keys in every S3 mount of their buckets, by mount, and the database's now(). */
export interface PrefetchedSequencers {
  now: Date;
  byMount: Map<string, Map<string, StoredNode>>;
}

/**
 * The S3 mounts of a batch's buckets (MountIndex) and the stored sequencers of its keys with
 * the clock, in ONE round trip: two statements sent together as text (simple protocol; every
 * bucket and key through escapeLiteral), each with its own snapshot.
 *
 * The sequencers are read before the mounts are known: each key is tried below the prefix of
 * each S3 mount of its bucket. A node row is used only where its path is the one the mount
 * index gives the key (a key whose path the index derives otherwise finds no row here and is
 * kept: looked at, never wrongly dropped). `now` is read before any look at storage, as
 * dropApplied's.
 */
export async function mountsAndSequencers(q: Queryable, keys: ReadonlyArray<{ bucket: string; key: string }>): Promise<{ index: MountIndex; prefetched: PrefetchedSequencers | undefined }> {
  const buckets = [...new Set(keys.map((k) => k.bucket))];
  if (keys.length === 0) return { index: MountIndex.of([], buckets), prefetched: undefined };
  const array = (xs: readonly string[]) => `ARRAY[${xs.map(lit).join(',')}]::text[]`;
  const results = (await q.query(
    `SELECT ${MOUNT_COLUMNS} FROM filestore.mounts WHERE kind = 's3' AND bucket = ANY(${array(buckets)}) ORDER BY key; ` +
      prefetchSql(
        array(keys.map((k) => k.bucket)),
        array(keys.map((k) => k.key)),
      ),
  )) as unknown as [{ rows: Mount[] }, { rows: PrefetchRow[] }];
  return { index: MountIndex.of(results[0].rows, buckets), prefetched: prefetched(results[1].rows) };
}

interface PrefetchRow extends StoredRow {
  mountId: string | null;
}

/** The stored sequencers' statement over the batch's buckets and keys (two text[] expressions, element by element). */
function prefetchSql(buckets: string, keys: string): string {
  // The candidate (mount, path) pairs first, materialised: joined to the nodes by value,
  // they use the live-path index (computed in the join, the path was only a filter).
  return `WITH c AS MATERIALIZED (
             SELECT DISTINCT m.id, substr(k.key, length(coalesce(m.prefix, '')) + 1) AS path
               FROM unnest(${buckets}, ${keys}) AS k(bucket, key)
               JOIN filestore.mounts m ON m.kind = 's3' AND m.bucket = k.bucket AND starts_with(k.key, coalesce(m.prefix, ''))
           )
           SELECT now() AS now, n.mount_id AS "mountId", n.path, ${STORED_COLUMNS}
             FROM (SELECT 1) AS one
             LEFT JOIN (c JOIN filestore.nodes n ON n.mount_id = c.id AND n.path = c.path AND n.deleted_at IS NULL) ON true`;
}

function prefetched(rows: PrefetchRow[]): PrefetchedSequencers {
  const byMount = new Map<string, Map<string, StoredNode>>();
  for (const r of rows) {
    if (r.mountId === null || r.path === null) continue;
    let m = byMount.get(r.mountId);
    if (!m) byMount.set(r.mountId, (m = new Map()));
    m.set(r.path, storedNode(r));
  }
  return { now: (rows[0] as { now: Date }).now, byMount };
}
