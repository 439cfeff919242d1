/**
 * One full audit as a worker runs it: a `reconciliation_jobs` row (reason "audit", path "",
 * recursive, no hashing) handed to the engine's handler, timed from the call to its return.
 * Also: the child-process variant whose peak RSS is the audit's own (pool, bus, relay
 * included), and an autoanalyze stand-in for servers where autovacuum is off.
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { JOB_COLUMNS, recordProgress, type ReconcileJobRow } from '../../shared/catalogue/jobs.ts';
import type { Pool, Queryable } from '../../shared/db/pool.ts';
import { createReconciler } from '../../shared/reconcile/reconciler.ts';
import type { ReconcileCounts } from '../../shared/reconcile/types.ts';
import { createFilestore, type Filestore } from '../../shared/runtime.ts';
import { machineBusySince, machineJiffies, processCpuSeconds, processPeakRssKB, processPssKB } from './proc.ts';
import { walkerPids } from '../../shared/backends/local/walker.ts';
import { traceSql, type StatementTally } from './sql-trace.ts';

export interface AuditResult {
  counts: ReconcileCounts;
  /** Inside the handler: walk, merge, batched writes, MISSING, rollups. */
  ms: number;
  /** CPU seconds of this process and its walker processes meanwhile (user + system). */
  cpuSeconds: number;
  /** The walker processes' part of cpuSeconds. */
  walkerCpuSeconds: number;
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
export async function runAudit(core: Filestore, mountId: string, onProgress?: (c: ReconcileCounts) => void): Promise<AuditResult> {
  const job = await auditJobRow(core.pool, mountId);
  const handler = createReconciler(core);
  const autoanalyze = startAutoanalyze(core.pool);
  const wal0 = await walLsn(core.pool);
  const j0 = machineJiffies();
  const cpu0 = process.cpuUsage();
  const walkers0 = walkersCpu();
  const startUs = nowUs();
  const t0 = performance.now();
  let counts: ReconcileCounts;
  try {
    // Progress as the worker records it (reconcile/worker.ts): on the job row.
    counts = await handler(job, async (c) => {
      await recordProgress(core.pool, job.id, c).catch(() => undefined);
      onProgress?.(c);
    });
  } catch (err) {
    await autoanalyze.stop();
    await core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'failed', error = $2, finished_at = now() WHERE id = $1`, [
      job.id,
      JSON.stringify({ message: (err as Error).message }),
    ]);
    throw err;
  }
  const ms = performance.now() - t0;
  const endUs = nowUs();
  const analyzeRuns = await autoanalyze.stop();
  const cpu = process.cpuUsage(cpu0);
  let walkerCpuSeconds = 0;
  for (const [pid, seconds] of walkersCpu()) walkerCpuSeconds += seconds - (walkers0.get(pid) ?? 0);
  const machineBusy = machineBusySince(j0);
  const walBytes = (await walLsn(core.pool)) - wal0;
  await core.pool.query(`UPDATE filestore.reconciliation_jobs SET status = 'succeeded', result = $2, finished_at = now(), updated_at = now() WHERE id = $1`, [
    job.id,
    JSON.stringify(counts),
  ]);
  return { counts, ms, cpuSeconds: (cpu.user + cpu.system) / 1e6 + walkerCpuSeconds, walkerCpuSeconds, machineBusy, walBytes, analyzeRuns, window: { startUs, endUs } };
}

/** The server's current WAL insert position in bytes. */
async function walLsn(q: Queryable): Promise<number> {
  const { rows } = await q.query<{ b: string }>(`SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::text AS b`);
  return Number(rows[0]?.b ?? Number.NaN);
}

/** CPU seconds so far of each walker process (the audit's walk runs in them: walker.ts). */
function walkersCpu(): Map<number, number> {
  return new Map(walkerPids().map((pid) => [pid, processCpuSeconds(pid)]));
}

/** Peak resident set sizes of the walker processes so far, summed (KiB). */
function walkersPeakRssKB(): number {
  return walkerPids().reduce((sum, pid) => sum + processPeakRssKB(pid), 0);
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

export const RESULT_MARKER = 'BENCH_AUDIT_RESULT ';

export interface ChildAuditResult {
  counts: ReconcileCounts;
  ms: number;
  cpuSeconds: number;
  walBytes: number;
  /** RSS once createFilestore returned, before the audit (KiB). */
  rssBeforeKB: number;
  /** Peak RSS when the audit returned (KiB, VmHWM, with the walker processes'): the audit's peak. */
  peakAfterAuditKB: number;
  /** The walker processes' part of peakAfterAuditKB. */
  walkersPeakKB: number;
  /**
   * Largest PSS of this process and its walkers together, sampled every 100 ms during the
   * audit (KiB): what they use between them, shared pages (node's own code) counted once.
   */
  sampledPeakPssKB: number;
  /** Publishing the audit's events (the relay, in close()), after the audit. */
  drainMs: number;
  /** Peak RSS at the very end, relay drain included (KiB, with the walker processes'). */
  peakAtExitKB: number;
  /** From spawn to exit, seen by the parent. */
  processMs: number;
  /** The audit's SQL statements (sql-trace.ts). */
  sql: StatementTally[];
  /** Largest values seen at the progress callbacks (every 2,000 entries, at most every 250 ms), bytes. */
  memory: { heapUsed: number; heapTotal: number; external: number; arrayBuffers: number; rss: number };
  /** ANALYZE runs of the autoanalyze stand-in during the audit. */
  analyzeRuns: number;
}

export interface ChildConfig {
  databaseUrl: string;
  redisUrl: string;
}

/** The child's side (bench/support/audit-child.ts; argv: mountId, databaseUrl, redisUrl). */
export async function runAuditChild(args: string[]): Promise<void> {
  const [mountId, databaseUrl, redisUrl] = args;
  if (!mountId || !databaseUrl || !redisUrl) throw new Error('usage: audit-child <mountId> <databaseUrl> <redisUrl>');
  const core = await createFilestore({
    databaseUrl,
    redisUrl,
    migrate: false,
    maintenanceIntervalMs: 3_600_000,
    log: (l) => process.stderr.write(`[audit child] ${l}\n`),
  });
  const trace = traceSql();
  try {
    const rssBeforeKB = Math.round(process.memoryUsage().rss / 1024);
    const memory = { heapUsed: 0, heapTotal: 0, external: 0, arrayBuffers: 0, rss: 0 };
    let lastReport = 0;
    trace.reset();
    let sampledPeakPssKB = 0;
    const samplePss = () => {
      sampledPeakPssKB = Math.max(sampledPeakPssKB, walkerPids().reduce((sum, pid) => sum + processPssKB(pid), processPssKB('self')));
    };
    const sampler = setInterval(samplePss, 100).unref();
    const result = await runAudit(core, mountId, (c) => {
      const m = process.memoryUsage();
      for (const k of Object.keys(memory) as Array<keyof typeof memory>) memory[k] = Math.max(memory[k], m[k]);
      if (c.checked - lastReport >= 200_000) {
        lastReport = c.checked;
        process.stderr.write(`  · audit child: ${c.checked} checked, RSS ${Math.round(m.rss / 2 ** 20)} MiB, heap used ${Math.round(m.heapUsed / 2 ** 20)} MiB\n`);
      }
    });
    clearInterval(sampler);
    samplePss();
    const walkersPeakKB = walkersPeakRssKB();
    const peakAfterAuditKB = peakRssKB() + walkersPeakKB;
    const sql = trace.tally();
    const t0 = performance.now();
    await core.close(); // stops the relay after draining the outbox: the events of a discovery
    const report: Omit<ChildAuditResult, 'processMs'> = {
      counts: result.counts,
      ms: result.ms,
      cpuSeconds: result.cpuSeconds,
      walBytes: result.walBytes,
      rssBeforeKB,
      peakAfterAuditKB,
      walkersPeakKB,
      sampledPeakPssKB,
      drainMs: performance.now() - t0,
      peakAtExitKB: peakRssKB() + walkersPeakRssKB(),
      sql,
      memory,
      analyzeRuns: result.analyzeRuns,
    };
    process.stdout.write(`${RESULT_MARKER}${JSON.stringify(report)}\n`);
  } catch (err) {
    await core.close().catch(() => undefined);
    throw err;
  }
}

