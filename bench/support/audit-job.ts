/**
 * One full audit as a worker runs it: a `reconciliation_jobs` row (reason "audit", path "",
 * recursive, no hashing) handed to the engine's handler, timed from the call to its return.
 * Also: the child-process variant whose peak RSS is the audit's own (pool, bus, relay
 * included), and a tally of the SQL statements an audit sends.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { JOB_COLUMNS, type ReconcileJobRow } from '../../shared/catalogue/jobs.ts';
import type { Pool, Queryable } from '../../shared/db/pool.ts';
import { createReconciler } from '../../shared/reconcile/reconciler.ts';
import type { ReconcileCounts } from '../../shared/reconcile/types.ts';
import { createFilestore, type Filestore } from '../../shared/runtime.ts';
import { run } from './big-write.ts';
import { machineBusySince, machineJiffies } from './proc.ts';

export interface AuditResult {
  counts: ReconcileCounts;
  /** Inside the handler: walk, merge, batched writes, MISSING, rollups. */
  ms: number;
  /** CPU seconds of this process meanwhile (user + system). */
  cpuSeconds: number;
  /** Share of the machine's CPU that was busy meanwhile (every process: node, postgres, …). */
  machineBusy: number;
  /** WAL written meanwhile (by every session of the server), bytes. */
  walBytes: number;
  /** ANALYZE runs of the autoanalyze stand-in during the audit. */
  analyzeRuns: number;
  /** Wall-clock window on the monotonic clock (µs, as V8 CPU profiles count). */
  window: { startUs: number; endUs: number };
}

const nowUs = () => Number(process.hrtime.bigint() / 1000n);

/** Inserts the job row a worker would have claimed: status running, a full audit without hashing. */
export async function auditJobRow(q: Queryable, mountId: string): Promise<ReconcileJobRow> {
  const { rows } = await q.query<ReconcileJobRow>(
    `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status, attempts, started_at)
     VALUES ($1, '', 'audit', $2, 'running', 1, now())
     RETURNING ${JOB_COLUMNS}`,
    [mountId, JSON.stringify({ recursive: true, hash: false })],
  );
  return rows[0] as ReconcileJobRow;
}

/** Runs one full audit of `mountId` through createReconciler and records the outcome on its job row. */
export async function runAudit(fs: Filestore, mountId: string, onProgress?: (c: ReconcileCounts) => void): Promise<AuditResult> {
  const job = await auditJobRow(fs.pool, mountId);
  const handler = createReconciler(fs);
  const autoanalyze = startAutoanalyze(fs.pool);
  const wal0 = await walLsn(fs.pool);
  const j0 = machineJiffies();
  const cpu0 = process.cpuUsage();
  const startUs = nowUs();
  const t0 = performance.now();
  let counts: ReconcileCounts;
  try {
    counts = await handler(job, async (c) => onProgress?.(c));
  } catch (err) {
    await autoanalyze.stop();
    await fs.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'failed', error = $2, finished_at = now() WHERE id = $1`, [
      job.id,
      JSON.stringify({ message: (err as Error).message }),
    ]);
    throw err;
  }
  const ms = performance.now() - t0;
  const endUs = nowUs();
  const analyzeRuns = await autoanalyze.stop();
  const cpu = process.cpuUsage(cpu0);
  const machineBusy = machineBusySince(j0);
  const walBytes = (await walLsn(fs.pool)) - wal0;
  await fs.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'succeeded', result = $2, finished_at = now(), updated_at = now() WHERE id = $1`, [
    job.id,
    JSON.stringify(counts),
  ]);
  return { counts, ms, cpuSeconds: (cpu.user + cpu.system) / 1e6, machineBusy, walBytes, analyzeRuns, window: { startUs, endUs } };
}

/** The server's current WAL insert position in bytes. */
async function walLsn(q: Queryable): Promise<number> {
  const { rows } = await q.query<{ b: string }>(`SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::text AS b`);
  return Number(rows[0]?.b ?? Number.NaN);
}

/** Peak resident set size of this process so far, KiB (VmHWM; maxRSS where /proc is absent). */
export function peakRssKB(): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS;
}

export interface Autoanalyze {
  /** Stops the loop (waits for an ANALYZE in progress); returns how many ANALYZE ran. */
  stop(): Promise<number>;
}

const ANALYZED_TABLES = ['nodes', 'snapshots', 'outbox', 'rollups', 'rollup_deltas'];

/**
 * A stand-in for autovacuum's autoanalyze where autovacuum is off (the development server):
 * every `everyMs` it applies autovacuum's rule — ANALYZE a table once more than
 * 50 + 10 % of its rows changed since the last ANALYZE — to the tables an audit writes. An
 * audit that grows the catalogue (a discovery) otherwise runs on the statistics of an empty
 * table for its whole length, with plans (sequential scans) that no real server keeps.
 * Production's autovacuum_naptime is 60 s; a shorter period keeps a bench-length audit honest.
 */
export function startAutoanalyze(pool: Pool, everyMs = 10_000): Autoanalyze {
  let runs = 0;
  let stopped = false;
  let running: Promise<void> = Promise.resolve();
  const pass = async () => {
    const { rows } = await pool.query<{ relname: string }>(
      `SELECT relname FROM pg_stat_user_tables
        WHERE schemaname = 'filestore' AND relname = ANY($1::text[]) AND n_mod_since_analyze > 50 + 0.1 * greatest(n_live_tup, 0)`,
      [ANALYZED_TABLES],
    );
    for (const r of rows) {
      if (stopped) return;
      await pool.query(`ANALYZE filestore.${r.relname}`);
      runs++;
    }
  };
  const timer = setInterval(() => {
    running = running.then(pass).catch(() => {});
  }, everyMs);
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
      return runs;
    },
  };
}

/** VACUUM (ANALYZE) of the tables an audit reads and rewrites (autovacuum may be off, as on the development server). */
export async function vacuumCatalogue(q: Queryable): Promise<number> {
  const t0 = performance.now();
  await q.query('VACUUM (ANALYZE) filestore.nodes, filestore.snapshots, filestore.rollups, filestore.rollup_deltas, filestore.outbox, filestore.reconciliation_jobs');
  return performance.now() - t0;
}

// ---------------------------------------------------------------------------------------------
// The child process: createFilestore, one audit, report, close.

export const AUDIT_CHILD_FLAG = '--child-audit';
const RESULT_MARKER = 'BENCH_AUDIT_RESULT ';

export interface ChildAuditResult {
  counts: ReconcileCounts;
  ms: number;
  cpuSeconds: number;
  walBytes: number;
  /** RSS once createFilestore returned, before the audit (KiB). */
  rssBeforeKB: number;
  /** Peak RSS when the audit returned (KiB, VmHWM): the audit's peak. */
  peakAfterAuditKB: number;
  /** Publishing the audit's events (the relay, in close()), after the audit. */
  drainMs: number;
  /** Peak RSS at the very end, relay drain included (KiB). */
  peakAtExitKB: number;
  /** From spawn to exit, seen by the parent. */
  processMs: number;
}

export interface ChildConfig {
  databaseUrl: string;
  redisUrl: string;
}

/** Spawns `script` as an audit child for `mountId` and returns what it measured. */
export async function spawnAudit(script: string, mountId: string, config: ChildConfig): Promise<ChildAuditResult> {
  const t0 = performance.now();
  const out = await run(process.execPath, ['--import', import.meta.resolve('tsx'), script, AUDIT_CHILD_FLAG, mountId, config.databaseUrl, config.redisUrl]);
  const processMs = performance.now() - t0;
  const line = out.split('\n').find((l) => l.startsWith(RESULT_MARKER));
  if (!line) throw new Error(`the audit child printed no result:\n${out}`);
  return { ...(JSON.parse(line.slice(RESULT_MARKER.length)) as Omit<ChildAuditResult, 'processMs'>), processMs };
}

/** The child's side (argv after the flag: mountId, databaseUrl, redisUrl). */
export async function runAuditChild(args: string[]): Promise<void> {
  const [mountId, databaseUrl, redisUrl] = args;
  if (!mountId || !databaseUrl || !redisUrl) throw new Error(`usage: ${AUDIT_CHILD_FLAG} <mountId> <databaseUrl> <redisUrl>`);
  const fs = await createFilestore({
    databaseUrl,
    redisUrl,
    migrate: false,
    maintenanceIntervalMs: 3_600_000,
    log: (l) => process.stderr.write(`[audit child] ${l}\n`),
  });
  try {
    const rssBeforeKB = Math.round(process.memoryUsage().rss / 1024);
    let lastReport = 0;
    const result = await runAudit(fs, mountId, (c) => {
      if (c.checked - lastReport >= 200_000) {
        lastReport = c.checked;
        process.stderr.write(`  · audit child: ${c.checked} checked, RSS ${Math.round(process.memoryUsage().rss / 2 ** 20)} MiB\n`);
      }
    });
    const peakAfterAuditKB = peakRssKB();
    const t0 = performance.now();
    await fs.close(); // stops the relay after draining the outbox: the events of a discovery
    const report: Omit<ChildAuditResult, 'processMs'> = {
      counts: result.counts,
      ms: result.ms,
      cpuSeconds: result.cpuSeconds,
      walBytes: result.walBytes,
      rssBeforeKB,
      peakAfterAuditKB,
      drainMs: performance.now() - t0,
      peakAtExitKB: peakRssKB(),
    };
    process.stdout.write(`${RESULT_MARKER}${JSON.stringify(report)}\n`);
  } catch (err) {
    await fs.close().catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// SQL statements of an audit: how many round trips of each kind, and how long each kind kept
// the caller waiting (from the call to the result, so queueing for a connection is included).

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
    let label = statementLabel(text);
    const state = tx.get(this) ?? { owner: null, beginMs: null };
    tx.set(this, state);
    if (label === 'BEGIN') {
      state.owner = null;
    } else if (state.beginMs !== null) {
      // The transaction's first statement says whose it is; its BEGIN is counted now.
      state.owner = label === RELAY_LOCK_LABEL ? 'relay' : 'other';
      add(state.owner === 'relay' ? 'relay: BEGIN' : 'BEGIN', state.beginMs, 0);
      state.beginMs = null;
    }
    if (state.owner === 'relay' && !label.startsWith('relay')) label = `relay: ${label}`;
    const endsTx = label === 'COMMIT' || label === 'ROLLBACK' || label === 'relay: COMMIT' || label === 'relay: ROLLBACK';
    const t0 = performance.now();
    const record = (rowCount: number) => {
      const ms = performance.now() - t0;
      if (label === 'BEGIN') state.beginMs = ms;
      else add(label, ms, rowCount);
      if (endsTx) state.owner = null;
    };
    const cbIndex = args.findIndex((a) => typeof a === 'function');
    if (cbIndex >= 0) {
      const cb = args[cbIndex] as (err: unknown, res: { rowCount?: number | null } | undefined) => void;
      args[cbIndex] = (err: unknown, res: { rowCount?: number | null } | undefined) => {
        record(res?.rowCount ?? 0);
        cb(err, res);
      };
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
    tally: () => [...stats.values()].sort((a, b) => b.ms - a.ms),
  };
}

const RELAY_LOCK_LABEL = 'relay: try the relay lock';

/** A readable name for a statement: its first words, the table, and what it does. */
function statementLabel(sql: string): string {
  const s = sql.replace(/\s+/g, ' ').trim();
  const known: Array<[RegExp, string]> = [
    [/^SELECT id, mount_id AS "mountId".* FROM filestore\.nodes WHERE mount_id = \$1 AND deleted_at IS NULL AND path > \$2/, 'scopeNodes: next page of catalogue rows (1,000, by path)'],
    [/^UPDATE filestore\.nodes n SET consistency_checked_at = now\(\)/, 'touchChecked: UPDATE nodes SET consistency_checked_at (unchanged rows)'],
    [/pg_try_advisory_xact_lock\(key\)/, 'tryLockPaths: try-lock the batch\'s paths'],
    [/^WITH input AS .*INSERT INTO filestore\.nodes/, 'insertNodes: INSERT nodes + snapshots + rollups (one per depth)'],
    [/^WITH v AS .*UPDATE filestore\.nodes n SET kind/, 'applyChanges: UPDATE changed nodes + snapshots'],
    [/^WITH up AS \( UPDATE filestore\.nodes n SET consistency_state = 'ACTIVE'/, 'reactivate'],
    [/^WITH up AS \( UPDATE filestore\.nodes n SET consistency_state = 'MISSING'/, 'markMissing'],
    [/^SELECT DISTINCT path FROM filestore\.nodes WHERE mount_id = \$1 AND path = ANY/, 'touchedSince: paths a command touched meanwhile'],
    [/INSERT INTO filestore\.outbox/, 'appendEvents: INSERT outbox'],
    [/^BEGIN$/, 'BEGIN'],
    [/^COMMIT$/, 'COMMIT'],
    [/^ROLLBACK$/, 'ROLLBACK'],
    [/^SELECT pg_try_advisory_xact_lock\(\$1\) AS locked$/, RELAY_LOCK_LABEL],
    [/^WITH next AS \( SELECT id, nextval\('filestore\.outbox_seq'\)/, 'relay: claim a batch of the outbox'],
    [/^UPDATE filestore\.reconciliation_jobs SET checkpoint/, 'saveCheckpoint: UPDATE reconciliation_jobs'],
    [/pg_try_advisory_lock\(\$1::bigint\)/, 'audit lock'],
    [/^WITH dirs AS .*INSERT INTO filestore\.rollups/, 'recomputeRollups: every directory of the scope, from the rows'],
    [/^WITH d AS .*INSERT INTO filestore\.rollup_deltas/, 'rollups: correction pushed to the ancestors'],
    [/^WITH picked AS .*filestore\.rollup_deltas/, 'compactRollups'],
    [/filestore\.rollup/, 'rollups (other)'],
    [/^ANALYZE /, 'background: ANALYZE (the autoanalyze stand-in)'],
    [/pg_stat_user_tables/, 'background: tables due for ANALYZE'],
  ];
  for (const [re, label] of known) if (re.test(s)) return label;
  return s.length > 90 ? `${s.slice(0, 90)}…` : s;
}
