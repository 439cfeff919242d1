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

/**
 * Leaves out the keys whose newest event is not newer than the sequencer their live node
 * stored (already applied, or found as recorded: a redelivery, a late older event). Keys
 * without a live node or without a sequencer are kept: only a look at storage can tell.
 */
export async function dropApplied(q: Queryable, mountId: string, keys: ReadonlyMap<string, KeyChange>): Promise<{ kept: KeyChange[]; dropped: string[]; now: Date }> {
  const withSequencer = [...keys.values()].filter((k) => k.sequencer !== undefined).map((k) => k.path);
  const { stored, now } = await storedSequencers(q, mountId, withSequencer);
  return dropStored(keys, stored, now);
}

/** dropApplied with the stored sequencers already read (a path absent from `stored`: no live node known, kept). */
export function dropStored(keys: ReadonlyMap<string, KeyChange>, stored: ReadonlyMap<string, string | null>, now: Date): { kept: KeyChange[]; dropped: string[]; now: Date } {
  const kept: KeyChange[] = [];
  const dropped: string[] = [];
  for (const k of keys.values()) {
    if (k.sequencer !== undefined && !isNewerSequencer(k.sequencer, stored.get(k.path))) dropped.push(k.path);
    else kept.push(k);
  }
  return { kept, dropped, now };
}

/**
 * findSequencers (catalogue/nodes.ts) and the database's now() in one statement: the time
 * taken before the batch's look at storage that detectDrift needs (DriftBatch.since).
 */
async function storedSequencers(q: Queryable, mountId: string, paths: string[]): Promise<{ stored: Map<string, string | null>; now: Date }> {
  const { rows } = await q.query<{ now: Date; path: string | null; sequencer: string | null }>({
    name: 'filestore.s3events.storedSequencers',
    text: `SELECT now() AS now, n.path, n.sequencer
             FROM (SELECT 1) AS one
             LEFT JOIN filestore.nodes n ON n.mount_id = $1 AND n.path = ANY($2::text[]) AND n.deleted_at IS NULL`,
    values: [mountId, paths],
  });
  const stored = new Map<string, string | null>();
  for (const r of rows) if (r.path !== null) stored.set(r.path, r.sequencer);
  return { stored, now: (rows[0] as { now: Date }).now };
}

/** The stored sequencers of a batch's keys in every S3 mount of their buckets, by mount, and the database's now(). */
export interface PrefetchedSequencers {
  now: Date;
  byMount: Map<string, Map<string, string | null>>;
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

interface PrefetchRow {
  now: Date;
  mountId: string | null;
  path: string | null;
  sequencer: string | null;
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
           SELECT now() AS now, n.mount_id AS "mountId", n.path, n.sequencer
             FROM (SELECT 1) AS one
             LEFT JOIN (c JOIN filestore.nodes n ON n.mount_id = c.id AND n.path = c.path AND n.deleted_at IS NULL) ON true`;
}

function prefetched(rows: PrefetchRow[]): PrefetchedSequencers {
  const byMount = new Map<string, Map<string, string | null>>();
  for (const r of rows) {
    if (r.mountId === null || r.path === null) continue;
    let m = byMount.get(r.mountId);
    if (!m) byMount.set(r.mountId, (m = new Map()));
    m.set(r.path, r.sequencer);
  }
  return { now: (rows[0] as { now: Date }).now, byMount };
}
