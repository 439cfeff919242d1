import pg from 'pg';
import type { EntryStat } from '../backends/types.ts';
import type { Queryable } from '../db/pool.ts';
import { pathLockSet } from './locks.ts';
import { appendEvents, type NewEvent } from './outbox.ts';
import { parentOf } from '../paths.ts';
import { int } from './inline-writes.ts';
import { NEWER_SEQUENCER } from './node-writes.ts';
import { NODE_COLUMNS } from './rows.ts';
import type { CatalogueNode } from './types.ts';

/**
 * Catalogue writes of drift *signals* (the agent's watchers), set-based: one statement per
 * kind of write for a whole batch, however many paths it holds. The caller runs them in one
 * transaction after try-locking the batch's paths (`beginLockAndRead` below), so a
 * path a command is working on is never judged. The reconciliation job that follows records
 * what storage holds; these writes only say "look here".
 */

export interface DriftSignal {
  /** The live row at the path, as read in this transaction. */
  node: CatalogueNode;
  /** What the disk holds there now; null when the path is gone. */
  seen: EntryStat | null;
}

const json = (v: unknown) => JSON.parse(JSON.stringify(v)) as Record<string, unknown>;

/**
 * ACTIVE → INCONSISTENT for many nodes at once (the set-based `markInconsistent`): sets
 * `last_drift_detected_at` and `consistency_checked_at`, emits `filestore.drift.detected`
 * with the recorded and the observed state. Only rows still ACTIVE at the version the caller
 * compared are marked (one already INCONSISTENT or MISSING has been signalled: no second
 * event). Returns the nodes marked.
 */
export async function markInconsistentMany(q: Queryable, mountId: string, signals: DriftSignal[], reason: string): Promise<CatalogueNode[]> {
  if (signals.length === 0) return [];
  const { rows } = await q.query<CatalogueNode>(
    `WITH up AS (
       UPDATE filestore.nodes n
          SET consistency_state = 'INCONSISTENT', last_drift_detected_at = now(), consistency_checked_at = now()
         FROM unnest($2::bigint[], $3::int[]) AS v(id, version)
        WHERE n.id = v.id AND n.version = v.version AND n.mount_id::text = $1::uuid::text AND n.deleted_at IS NULL
          AND n.consistency_state = 'ACTIVE'
        RETURNING n.*
     )
     SELECT ${NODE_COLUMNS} FROM up`,
    [mountId, signals.map((s) => s.node.id), signals.map((s) => s.node.version)],
  );
  const seenById = new Map(signals.map((s) => [s.node.id, s.seen]));
  await appendEvents(
    q,
    rows.map((node): NewEvent => ({
      type: 'filestore.drift.detected',
      mountId,
      data: { nodeId: node.id, path: node.path, reason, node: json(node), observed: seenById.get(node.id) ? json(seenById.get(node.id)) : null },
    })),
  );
  return rows;
}

/** Untracked entries of one directory reported by one event at most (a bigger group takes several). */
export const MAX_PATHS_PER_DRIFT_EVENT = 1_000;

/**
 * Drift at paths the catalogue does not track (created outside Filestore): no row to mark, so
 * only `filestore.drift.detected` with `nodeId: null`; the reconciliation job discovers them.
 *
 * One event per path, `{nodeId: null, path, reason, observed}` — except where `groupAt` or
 * more of them lie directly in one directory (a burst: a copy, an unpacked archive): then one
 * event for that directory, `{nodeId: null, path: <directory>, reason, observed: null,
 * paths: [...], count}`, naming every one of them (up to MAX_PATHS_PER_DRIFT_EVENT per event).
 * Returns the events written.
 */
export async function recordUntrackedDrift(q: Queryable, mountId: string, seen: EntryStat[], reason: string, groupAt = Number.POSITIVE_INFINITY): Promise<number> {
  const events = untrackedDriftEvents(mountId, seen, reason, groupAt);
  await appendEvents(q, events);
  return events.length;
}

/** The events `recordUntrackedDrift` writes (to send them with other statements: appendEventsSql). */
export function untrackedDriftEvents(mountId: string, seen: EntryStat[], reason: string, groupAt = Number.POSITIVE_INFINITY): NewEvent[] {
  const byDir = new Map<string, EntryStat[]>();
  for (const s of seen) {
    const dir = parentOf(s.path) ?? '';
    let list = byDir.get(dir);
    if (!list) byDir.set(dir, (list = []));
    list.push(s);
  }
  const events: NewEvent[] = [];
  for (const [dir, entries] of byDir) {
    if (entries.length < Math.max(2, groupAt)) {
      for (const s of entries) events.push({ type: 'filestore.drift.detected', mountId, data: { nodeId: null, path: s.path, reason, observed: json(s) } });
      continue;
    }
    for (let i = 0; i < entries.length; i += MAX_PATHS_PER_DRIFT_EVENT) {
      const paths = entries.slice(i, i + MAX_PATHS_PER_DRIFT_EVENT).map((s) => s.path);
      events.push({ type: 'filestore.drift.detected', mountId, data: { nodeId: null, path: dir, reason, observed: null, paths, count: paths.length } });
    }
  }
  return events;
}

/** A directory listing job on its way: `startedAgoMs` null while it waits (queued), else how long ago it started (database clock). */
export interface OpenListing {
  path: string;
  startedAgoMs: number | null;
}

/**
 * The non-recursive reconcile jobs (a path and its direct children) of `paths` that are queued
 * or running, with how long ago each running one started.
 */
export async function openListings(q: Queryable, mountId: string, paths: string[]): Promise<OpenListing[]> {
  if (paths.length === 0) return [];
  const { rows } = await q.query<{ path: string; ago: number | null }>(
    `SELECT path, CASE WHEN status = 'running' THEN extract(epoch FROM now() - started_at) * 1000 END::float8 AS ago
       FROM filestore.reconciliation_jobs
      WHERE mount_id = $1 AND status IN ('queued', 'running') AND path = ANY($2::text[]) AND options->>'recursive' = 'false'`,
    [mountId, paths],
  );
  return rows.map((r) => ({ path: r.path, startedAgoMs: r.ago }));
}

/** The paths among `paths` whose live row is a directory. */
export async function liveDirectoriesAmong(q: Queryable, mountId: string, paths: string[]): Promise<Set<string>> {
  if (paths.length === 0) return new Set();
  const { rows } = await q.query<{ path: string }>(
    `SELECT path FROM filestore.nodes WHERE mount_id = $1 AND path = ANY($2::text[]) AND deleted_at IS NULL AND kind = 'directory'`,
    [mountId, paths],
  );
  return new Set(rows.map((r) => r.path));
}

/*
 * A drift judgement's transaction in two round trips rather than seven: BEGIN with the
 * try-locks and one read (changedSince and the live rows together), and the rows found as
 * recorded (checked mark and sequencer) with the COMMIT. Both go by the
 * simple protocol, which carries several statements but no parameters: what they carry inline
 * is numbers (lock keys, node ids), and strings through pg's escapeLiteral.
 */

/**
 * BEGIN, then `lockPathsForWrite(q, mountId, paths)` without a wait (the same keys and order),
 * then the live rows at `paths` and `also` (as findLiveByPaths) with the paths whose rows (live
 * or tombstoned) a write changed after `since` (database clock), in ONE round trip of three
 * statements. In READ COMMITTED each statement of a simple-protocol query takes its own
 * snapshot when it starts, so the read's snapshot is taken after the locks are held: a
 * command that held one of them has committed by then and its rows are seen (what a read sent
 * as a statement of its own guaranteed). Rows at paths whose locks were refused are read too;
 * the caller judges only the `free` ones. A watcher that looked at storage before `since`
 * cannot tell a command's write from drift: a `changed` path is looked at again later.
 */
export async function beginLockAndRead(
  q: Queryable,
  mountId: string,
  paths: string[],
  since: Date,
  also: readonly string[] = [],
): Promise<{ free: Set<string>; live: Map<string, CatalogueNode>; changed: Set<string> }> {
  const live = new Map<string, CatalogueNode>();
  const changed = new Set<string>();
  if (paths.length === 0) {
    await q.query('BEGIN');
    return { free: new Set(), live, changed };
  }
  const { locks, keysOf } = pathLockSet(mountId, paths);
  const keys = locks.map((l) => l.key.toString()).join(',');
  const modes = locks.map((l) => (l.mode === 'exclusive' ? 't' : 'f')).join(',');
  const m = pg.escapeLiteral(mountId);
  const t = pg.escapeLiteral(since.toISOString());
  const read = `ARRAY[${[...new Set([...paths, ...also])].map((p) => pg.escapeLiteral(p)).join(',')}]::text[]`;
  const results = (await q.query(
    `BEGIN;
     WITH tried AS MATERIALIZED (
       SELECT key, CASE WHEN ex THEN pg_try_advisory_xact_lock(key) ELSE pg_try_advisory_xact_lock_shared(key) END AS ok
         FROM unnest('{${keys}}'::bigint[], '{${modes}}'::boolean[]) AS t(key, ex) ORDER BY key
     )
     SELECT key::text FROM tried WHERE NOT ok;
     SELECT ${NODE_COLUMNS}, updated_at > ${t}::timestamptz AS "changedSince" FROM filestore.nodes WHERE mount_id = ${m} AND deleted_at IS NULL AND path = ANY(${read})
     UNION ALL
     SELECT ${NODE_COLUMNS}, true FROM filestore.nodes WHERE mount_id = ${m} AND deleted_at > ${t}::timestamptz AND path = ANY(${read})`,
  )) as unknown as Array<{ rows: unknown[] }>;
  const refusedRows = (results[1]?.rows ?? []) as Array<{ key: string }>;
  const refused = new Set(refusedRows.map((r) => BigInt(r.key)));
  const free = refused.size === 0 ? new Set(paths) : new Set(paths.filter((p) => !keysOf(p).some((k) => refused.has(k))));
  for (const { changedSince, ...node } of (results[2]?.rows ?? []) as Array<CatalogueNode & { changedSince: boolean }>) {
    if (changedSince) changed.add(node.path);
    if (node.deletedAt === null) live.set(node.path, node);
  }
  return { free, live, changed };
}

/**
 * The statements that end a judgement, sent as one round trip: every check sets
 * `consistency_checked_at` (SPEC §3) of the rows found as recorded, and their events'
 * sequencers are recorded (recordSequencers: only a newer one replaces the stored one), in one
 * UPDATE, then COMMIT; `before` (statements as text) go first, `after` just before the COMMIT.
 */
export function touchCheckedAndCommitSql(
  mountId: string,
  matched: ReadonlyArray<{ id: number; sequencer: string | undefined }>,
  before: ReadonlyArray<string | null> = [],
  after: ReadonlyArray<string | null> = [],
  o: { wroteNothingElse?: boolean } = {},
): string {
  // Bookkeeping only (the transaction wrote nothing else, `wroteNothingElse`, and nothing
  // else comes): the COMMIT does not wait for the WAL flush (SET LOCAL synchronous_commit =
  // off). What a crash could take back is a check time and a sequencer, both re-derivable:
  // an older event is then judged against storage again (a HEAD), never wrongly applied;
  // every later synchronous commit flushes it anyway. This is most S3 events and most watcher
  // events (Filestore's own writes, seen again); the fsync cost 2-4 ms a batch here.
  const bookkeeping = o.wroteNothingElse === true && before.every((x) => x === null) && after.every((x) => x === null);
  return [bookkeeping ? ASYNC_COMMIT_SQL : null, ...before, touchCheckedSql(mountId, matched), ...after, 'COMMIT'].filter((x): x is string => x !== null).join(';\n');
}

/**
 * The mount check of a statement that finds a batch's rows by id: a filter, never an index
 * condition. Without planner statistics (autovacuum off or behind; the product must not depend
 * on it) PostgreSQL took `mount_id = …` to the mount's live path index and hashed every live
 * node of the mount to find ten: the cost of a batch grew with the mount. As text it can only
 * be checked on the rows the primary key found (tests/batch-statement-reads.test.ts).
 */
export function sameMount(alias: string, mountId: string): string {
  // The id through uuid, so that a malformed one fails as before instead of matching nothing.
  return `${alias}.mount_id::text = ${pg.escapeLiteral(mountId)}::uuid::text`;
}

/** A transaction's COMMIT that does not wait for its WAL to reach the disk (see touchCheckedAndCommitSql). */
export const ASYNC_COMMIT_SQL = 'SET LOCAL synchronous_commit = off';

/**
 * The UPDATE of `touchCheckedAndCommitSql`, or null when no row was found as recorded.
 * `checked: false`: the sequencers alone (a row found as recorded by an event's report, not by
 * a look at storage: no check took place).
 */
export function touchCheckedSql(mountId: string, matched: ReadonlyArray<{ id: number; sequencer: string | undefined }>, o: { checked?: boolean } = {}): string | null {
  if (matched.length === 0) return null;
  const ids = matched.map((m) => int(m.id)).join(',');
  const sequencers = matched.map((m) => (m.sequencer === undefined ? 'NULL' : pg.escapeLiteral(m.sequencer))).join(',');
  // The sequencer rule of recordSequencers (node-writes.ts NEWER_SEQUENCER), for rows with a sequencer.
  return `UPDATE filestore.nodes n
             SET ${o.checked === false ? '' : 'consistency_checked_at = now(), '}sequencer = CASE WHEN s.sequencer IS NOT NULL AND ${NEWER_SEQUENCER}
                   THEN s.sequencer ELSE n.sequencer END
            FROM unnest('{${ids}}'::bigint[], ARRAY[${sequencers}]::text[]) AS s(id, sequencer)
           WHERE n.id = s.id AND ${sameMount('n', mountId)} AND n.deleted_at IS NULL`;
}
