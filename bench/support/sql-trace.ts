/**
 * SQL statements of an audit: how many round trips of each kind, and how long each kind kept
 * the caller waiting (from the call to the result, so queueing for a connection and event-loop
 * delays are included).
 */
import { performance } from 'node:perf_hooks';
import pg from 'pg';

export interface StatementTally {
  label: string;
  calls: number;
  ms: number;
  rows: number;
}

export interface SqlTrace {
  /** Starts counting (again, from zero). */
  reset(): void;
  /** Statements by total wait, largest first. */
  tally(): StatementTally[];
}

type QueryFn = (this: pg.Client, ...args: unknown[]) => unknown;

/**
 * Wraps pg.Client.prototype.query (every pool connection) for the bench's process. The
 * wrapper costs a closure and a clock read per statement; audits send a few hundred.
 * The outbox relay runs in the same process (as in a worker) and its transactions interleave
 * with the audit's: a transaction whose first statement is the relay's lock is labelled
 * "relay: …" throughout, BEGIN and COMMIT included.
 */
export function traceSql(): SqlTrace {
  let stats = new Map<string, StatementTally>();
  const tx = new WeakMap<object, { owner: 'relay' | 'other' | null; beginMs: number | null }>();
  const add = (label: string, ms: number, rows: number) => {
    const s = stats.get(label) ?? { label, calls: 0, ms: 0, rows: 0 };
    s.calls++;
    s.ms += ms;
    s.rows += rows;
    stats.set(label, s);
  };
  const proto = pg.Client.prototype as unknown as { query: QueryFn };
  const original = proto.query;
  proto.query = function tracedQuery(this: pg.Client, ...args: unknown[]): unknown {
    const first = args[0] as string | { text?: string } | undefined;
    const text = typeof first === 'string' ? first : typeof first?.text === 'string' ? first.text : null;
    if (text === null) return original.apply(this, args);
    let label = cachedLabel(text);
    const state = tx.get(this) ?? { owner: null, beginMs: null };
    tx.set(this, state);
    if (label === 'BEGIN') {
      state.owner = null;
    } else if (/^\s*BEGIN;/.test(text)) {
      // BEGIN sent with the transaction's first statements (one round trip): whose it is, now.
      state.owner = label === RELAY_LOCK_LABEL ? 'relay' : 'other';
      state.beginMs = null;
    } else if (state.beginMs !== null) {
      // The transaction's first statement says whose it is; its BEGIN is counted now.
      state.owner = label === RELAY_LOCK_LABEL ? 'relay' : 'other';
      add(state.owner === 'relay' ? 'relay: BEGIN' : 'BEGIN', state.beginMs, 0);
      state.beginMs = null;
    }
    if (state.owner === 'relay' && !label.startsWith('relay')) label = `relay: ${label}`;
    const endsTx = label === 'COMMIT' || label === 'ROLLBACK' || label === 'relay: COMMIT' || label === 'relay: ROLLBACK' || /;\s*COMMIT\s*$/.test(text);
    const t0 = performance.now();
    const record = (rowCount: number) => {
      const ms = performance.now() - t0;
      if (label === 'BEGIN') state.beginMs = ms;
      else add(label, ms, rowCount);
      if (endsTx) state.owner = null;
    };
    const cbIndex = args.findIndex((a) => typeof a === 'function');
    if (cbIndex >= 0) {
      args[cbIndex] = recordingCallback(args[cbIndex] as QueryCallback, record);
      return original.apply(this, args);
    }
    const out = original.apply(this, args) as Promise<{ rowCount?: number | null }> | undefined;
    if (out && typeof out.then === 'function') {
      out.then(
        (res) => record(res?.rowCount ?? 0),
        () => record(0),
      );
    }
    return out;
  };
  return {
    reset: () => {
      stats = new Map();
    },
    // Copies: statements after the call (the next phase of a bench) must not change them.
    tally: () => [...stats.values()].map((t) => ({ ...t })).sort((a, b) => b.ms - a.ms),
  };
}

type QueryCallback = (err: unknown, res: { rowCount?: number | null } | undefined) => void;

/**
 * `cb`, recording the statement first. Built here, not as an arrow function inside
 * tracedQuery: written inline, it made every catalogue page an audit read (pg-pool passes a
 * callback) survive two scavenges and be promoted to the old generation — ~2 MB per scavenge,
 * most of what the 1M-file audit's heap grew by (measured with the sampling heap profiler,
 * keeping objects collected by major GCs). Why V8 retains them one way and not the other was
 * not established; the bench must not inflate the memory it measures.
 */
function recordingCallback(cb: QueryCallback, record: (rowCount: number) => void): QueryCallback {
  return (err, res) => {
    record(res?.rowCount ?? 0);
    cb(err, res);
  };
}

const RELAY_LOCK_LABEL = 'relay: try the relay lock (and claim a batch)';

// Labels by statement text: the regexes below cost ~25 µs per statement of a long text (~0.2 ms
// of an S3-event batch's 23), time the traced handler would otherwise be charged with. Texts
// that carry their values (simple protocol) are new each time: the cache is bounded.
const labels = new Map<string, string>();
function cachedLabel(sql: string): string {
  let label = labels.get(sql);
  if (label === undefined) {
    if (labels.size >= 2000) labels.clear();
    label = statementLabel(sql);
    labels.set(sql, label);
  }
  return label;
}

/** A readable name for a statement: its first words, the table, and what it does. */
function statementLabel(sql: string): string {
  const s = sql.replace(/\s+/g, ' ').trim();
  const known: Array<[RegExp, string]> = [
    [/^SELECT string_agg\(concat\(id, /, 'scopePages: next page of catalogue rows (by path, one text value)'],
    // Several statements in one round trip (simple protocol): named by what they carry. The
    // leading BEGIN is part of the round trip, so it is not counted as a BEGIN of its own.
    [/^BEGIN; WITH tried AS MATERIALIZED .*; SELECT .* FROM filestore\.nodes/, 'beginLockAndRead: BEGIN + try-lock the paths + read their rows'],
    [/^SAVEPOINT s3_event_apply; INSERT INTO filestore\.reconciliation_jobs/, 's3 apply: SAVEPOINT + INSERT job rows (running)'],
    [/^SAVEPOINT s3_event_apply; WITH input AS .*INSERT INTO filestore\.reconciliation_jobs/, 's3 apply: SAVEPOINT + INSERT job rows (running) + new nodes'],
    [/UPDATE filestore\.reconciliation_jobs j SET status = 'succeeded'.*COMMIT$/, 'drift + s3 apply: drift events, rollups, reconciled events, jobs finished, checks/sequencers + COMMIT'],
    [/^INSERT INTO filestore\.outbox .*UPDATE filestore\.nodes n SET consistency_checked_at .*COMMIT$/, 'drift: untracked events + checked marks/sequencers + COMMIT'],
    [/^INSERT INTO filestore\.outbox .*COMMIT$/, 'drift: untracked events + COMMIT'],
    [/^UPDATE filestore\.nodes n SET consistency_checked_at = now\(\).*COMMIT$/, 'drift: checked marks/sequencers + COMMIT'],
    [/^INSERT INTO filestore\.reconciliation_jobs .*'s3_event'/, 's3 apply: INSERT job rows (running)'],
    [/^SELECT now\(\) AS now, n\.path, n\.sequencer/, 's3 events: stored sequencers + the clock'],
    [/^WITH c AS MATERIALIZED .* SELECT now\(\) AS now, n\.mount_id AS "mountId", n\.path, n\.sequencer/, 's3 events: stored sequencers + the clock (beside the mounts)'],
    [/^SELECT id, key, kind, root_path.*; WITH c AS MATERIALIZED .* SELECT now\(\) AS now, n\.mount_id/, 's3 events: mounts of the buckets + stored sequencers + the clock'],
    [/^SELECT id, key, kind, root_path/, 'mounts of the buckets'],
    [/^UPDATE filestore\.mounts SET health/, 'mount health (beside the transaction)'],
    [/^UPDATE filestore\.nodes n SET consistency_checked_at = now\(\)/, 'touchChecked: UPDATE nodes SET consistency_checked_at (unchanged rows)'],
    [/pg_try_advisory_xact_lock\(key\)/, 'lockPathsForWrite: try-lock the batch\'s paths'],
    [/pg_advisory_xact_lock\(key\)/, 'lockPathsForWrite: wait for paths another writer held'],
    [/set_config\('lock_timeout'/, 'lockPathsForWrite: lock wait bound'],
    [/^SET LOCAL enable_seqscan = off$/, 'claimBatch: index scans only'],
    [/^WITH input AS .*INSERT INTO filestore\.nodes/, 'insertNodes: INSERT nodes + snapshots + rollups (one per depth)'],
    [/^WITH v AS .*UPDATE filestore\.nodes n SET kind/, 'applyChanges: UPDATE changed nodes + snapshots'],
    [/^WITH up AS \( UPDATE filestore\.nodes n SET consistency_state = 'ACTIVE'/, 'reactivate'],
    [/^WITH up AS \( UPDATE filestore\.nodes n SET consistency_state = 'MISSING'/, 'markMissing'],
    [/^SELECT path FROM filestore\.nodes WHERE mount_id = \$1 AND deleted_at > \$3/, 'deletedSince: paths a command deleted meanwhile'],
    [/^UPDATE filestore\.mounts SET audited_at/, 'recordAudit: the mount checked as of the audit'],
    [/INSERT INTO filestore\.outbox/, 'appendEvents: INSERT outbox'],
    [/^BEGIN$/, 'BEGIN'],
    [/^COMMIT$/, 'COMMIT'],
    [/^ROLLBACK$/, 'ROLLBACK'],
    [/^SELECT pg_try_advisory_xact_lock\(\$1\) AS locked$/, RELAY_LOCK_LABEL],
    [/^SELECT next\.id, next\.seq, /, 'relay: claim a batch of the outbox'],
    [/^UPDATE filestore\.outbox o SET seq = p\.seq/, 'relay: mark the batch published (with its COMMIT)'],
    [/^BEGIN; SELECT pg_try_advisory_xact_lock\(\d+\) AS locked(; SET LOCAL enable_seqscan = off)?$/, RELAY_LOCK_LABEL],
    [/^BEGIN; SELECT set_config\('filestore\.relay_locked', pg_try_advisory_xact_lock\(\d+\)/, RELAY_LOCK_LABEL],
    [/^UPDATE filestore\.reconciliation_jobs SET checkpoint/, 'saveCheckpoint: UPDATE reconciliation_jobs'],
    [/pg_try_advisory_lock\(\$1::bigint\)/, 'audit lock'],
    [/^WITH dirs AS .*INSERT INTO filestore\.rollups/, 'recomputeRollups: every directory of the scope, from the rows'],
    [/^WITH d AS .*INSERT INTO filestore\.rollup_deltas/, 'rollups: correction pushed to the ancestors'],
    [/^WITH picked AS .*filestore\.rollup_deltas/, 'compactRollups'],
    [/^INSERT INTO filestore\.rollup_deltas .* FROM unnest\(\$2::text\[\], \$3::bigint\[\]/, 'addInsertedToAncestors: rollup deltas of discovered nodes'],
    [/filestore\.rollup/, 'rollups (other)'],
    [/^ANALYZE /, 'background: ANALYZE (the autoanalyze stand-in)'],
    [/pg_stat_user_tables/, 'background: tables due for ANALYZE'],
  ];
  for (const [re, label] of known) if (re.test(s)) return label;
  return s.length > 90 ? `${s.slice(0, 90)}…` : s;
}
