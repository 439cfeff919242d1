/**
 * Discovery on the product path: `filestore start` (the CLI's `start`, as `npm start` runs it:
 * embedded PostgreSQL by default, the watcher on) in a child process, in a fresh folder whose
 * `data/` already holds a tree of small files; then `POST /v1/reconcile` of mount "local" and
 * the job polled until it is final, as `filestore reconcile local --wait` does. Timed from the
 * POST to the job's end as the poll sees it (its `finishedAt`: the poll, every 250 ms, only
 * has to see that it ended). Beside it: the server's CPU seconds and PostgreSQL's (every
 * process of its server) during the job, the server's PSS at the end, the time until the
 * outbox is empty, `rclone lsjson -R` on the same tree in the same run.
 *
 * Then, on the same server and tree (unless BENCH_PRODUCT_AFTER=0), once the watcher watches the
 * tree (the agent's mount refresh, ≤ 30 s) and its jobs and the outbox have settled:
 *   1. the unchanged audit: POST /v1/reconcile to the job's end, beside `rclone lsjson -R`;
 *   2. the same through the CLI as users run it: `node cli/bin.js reconcile tree --wait` (the
 *      bundle: FILESTORE_CLI_SOURCES=0, FILESTORE_URL the server's), spawn to exit, beside its
 *      job's own created → finished;
 *   3. a fresh 1 % drift (applyDrift: modified, added, deleted out of band, synced), then the
 *      audit to its end, beside rclone on the drifted tree. The watcher stays on (as npm start
 *      has it): it sees the drift and may reconcile part of it first; its jobs from the drift
 *      to our job's end are reported beside our audit, and the catalogue is checked against the
 *      tree once everything settled.
 * rclone goes first in every other round (as in the discovery).
 *
 * Run on its own (a reproduction of the product-path figure):
 *   npx tsx bench/support/audit-product.ts [files] [rounds]
 * Environment: BENCH_PRODUCT_DATABASE (unset: embedded; a postgres:// URL: the product on
 * that server, its database dropped and created afresh each round), BENCH_CPU_PROF (a
 * directory: the server runs with --cpu-prof there and its profile is summarised),
 * BENCH_PRODUCT_BUNDLE (0: the server from the sources through tsx; default: dist/filestore.js,
 * as `npm start` runs it, built first when missing or older than its sources), BENCH_PRODUCT_LEAN (1: empty files, made fast: the 1M tree),
 * BENCH_KEEP (1: keep the folder, its embedded database included), BENCH_PRODUCT_AFTER (0: no
 * unchanged, CLI and drift audits after the discovery), BENCH_PRODUCT_WATCHERS (false: diagnosis
 * without the watcher).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { FilestoreClient } from '../../shared/client/index.ts';
import { ensureRclone, timeCommand, rcloneLsjson, type PeerRun } from './audit-peers.ts';
import { applyDrift, createLeanTree, createSmallFileTree, type Drift, type TreeShape, type TreeState } from './audit-trees.ts';
import { syncAll } from './big-write.ts';
import { summariseCpuProfile, type ProfileSummary } from './cpu-profile.ts';
import { processCpuSeconds, processPssKB } from './proc.ts';
import { pollDelayMs } from '../../cli/commands/reconcile.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** The watcher backend the server chose for the bench's mount `tree`, from its log; null before it chose. */
const treeWatcher = (log: string): string | null => /watcher tree: (chokidar|parcel|dirs) \(/.exec(log)?.[1] ?? null;

export interface ProductRun {
  /** POST /v1/reconcile to the job's final state, as the poll saw it. */
  jobMs: number;
  status: string;
  counts: Record<string, number>;
  /** CPU seconds of the server process and of PostgreSQL during the job. */
  serverCpuS: number;
  postgresCpuS: number;
  /** PostgreSQL's CPU seconds during the job by process (backends, checkpointer, WAL writer…). */
  postgresByProcess: Array<{ title: string; cpuS: number }>;
  /** The server's PSS (KiB) right after the job. */
  serverPssKB: number;
  /** The largest summed PSS (KiB) of the server's process tree seen during the job (sampled at each poll). */
  peakPssKB: number;
  /** The largest PSS of the server process alone, of its walkers together, and of PostgreSQL's processes (embedded: reported beside, not in peakPssKB). */
  peakServerPssKB: number;
  peakWalkersPssKB: number;
  peakPostgresPssKB: number;
  /** Each process of that tree at the peak. */
  peakByProcess: Array<{ title: string; pssMB: number }>;
  /** From the POST until the server said it watches the tree, when that was before the job's end (null: not during the job). */
  watchedInJobMs: number | null;
  /** The watcher backend the server chose for the tree's mount, from its log (`watcher tree: <kind> (<reason>)`), if it did before the job's end. */
  watcherBackend: string | null;
  /** From the job's end until the outbox held no unpublished event. */
  outboxDrainMs: number;
  /** Events the audit wrote (outbox rows of its job). */
  events: number;
  rclone: PeerRun;
  load: string;
  profile: ProfileSummary | null;
  /** The audits after the discovery on the same server (null: not measured). */
  after: AfterRuns | null;
}

/** A job of the mount other than the one measured (the watcher's: drift jobs, its catch-up audit). */
export interface OtherJob {
  id: number;
  reason: string;
  path: string;
  status: string;
  counts: Record<string, number>;
  /** Its created / finished relative to the POST of the measured job (ms; null: not finished). */
  createdMs: number;
  finishedMs: number | null;
}

export interface AuditTiming {
  /** POST to the job's end as the server recorded it (finished_at, same clock). */
  ms: number;
  /** POST to the poll that saw it final, polling on the CLI's schedule (cli/commands/reconcile.ts pollDelayMs). */
  seenMs: number;
  /** The job row's started_at → finished_at. */
  runMs: number;
  status: string;
  counts: Record<string, number>;
  serverCpuS: number;
  /** The server's child processes but PostgreSQL's (the walkers) during the job. */
  walkerCpuS: number;
  postgresCpuS: number;
  rclone: PeerRun;
  rcloneFirst: boolean;
  /** Waiting, untimed, before the phase for the mount's jobs and the outbox to settle. */
  settleMs: number;
  /** Other jobs of the mount created from the phase's start (the drift written) to our job's end. */
  others: OtherJob[];
  load: string;
}

export interface CliTiming {
  /** `node cli/bin.js reconcile tree --wait`, spawn to exit. */
  wallMs: number;
  exitCode: number | null;
  /** Its job's created_at → finished_at (the server's clock, the same machine's). */
  jobMs: number;
  /** Its job's started_at → finished_at. */
  runMs: number;
  /** Spawn → the job's created_at (node start, the bundle's load, the POST). */
  toCreatedMs: number;
  /** The job's finished_at → exit (the poll that sees it, the final GETs, printing, exit). */
  afterFinishMs: number;
  status: string;
  counts: Record<string, number>;
  output: string;
  load: string;
}

export interface AfterRuns {
  /** From mount creation until the server logged that it watches the tree (null: never, or watchers off). */
  watchedAfterMs: number | null;
  /** The watcher backend of the tree's mount (null: never watched). */
  watcherBackend: string | null;
  unchanged: AuditTiming;
  cli: CliTiming;
  drift: AuditTiming & { drift: Drift; catalogue: string; catalogueOk: boolean };
  /** Each phase's busy CPU in the server's profile (BENCH_CPU_PROF). */
  profiles: Record<string, ProfileSummary>;
}

export interface ProductOptions {
  /** Unset: embedded PostgreSQL. A URL: the product's DATABASE_URL (dropped and created afresh). */
  databaseUrl?: string | undefined;
  /** `name = value` settings of that database (diagnosis: auto_explain, log_min_duration_statement). */
  databaseSettings?: string[] | undefined;
  cpuProfDir?: string | undefined;
  bundle?: boolean;
  /** Empty files made by `xargs touch` (the 1M tree), not files of 100 B – 4 KB. */
  lean?: boolean;
  /** rclone lists the tree before our job (alternating rounds), not after it. */
  rcloneFirst?: boolean;
  /** The unchanged, CLI and drift audits after the discovery (default true). */
  after?: boolean;
  /** The round (0-based): which drift applyDrift makes. */
  round?: number;
  log?: (line: string) => void;
}

export interface ProductPart {
  mode: 'embedded' | 'machine';
  runs: ProductRun[];
}

/**
 * The product-path discovery for the audit bench: `rounds` discoveries of a fresh tree each
 * (a new folder, a new `start`, a new database), rclone on the same tree beside each, first in
 * every other round; for each mode asked for: `embedded` (npm start's default) and `machine`
 * (DATABASE_URL on the machine's PostgreSQL, the bench database with `_product` appended).
 */
export async function productAuditPart(
  shape: TreeShape,
  o: { rounds: number; modes: Array<'embedded' | 'machine'>; machineUrl: string; cpuProfDir?: string | undefined; progress: (line: string) => void },
): Promise<ProductPart[]> {
  const parts: ProductPart[] = o.modes.map((mode) => ({ mode, runs: [] }));
  const machineUrl = new URL(o.machineUrl);
  machineUrl.pathname = `${machineUrl.pathname}_product`;
  for (let r = 0; r < o.rounds; r++) {
    for (const part of parts) {
      o.progress(`product path (${part.mode}), round ${r + 1}/${o.rounds}: start, add the mount, reconcile --wait, then unchanged, CLI and 1 % drift audits; rclone ${r % 2 === 1 ? 'first' : 'after'}…`);
      part.runs.push(
        await productDiscovery(shape, {
          databaseUrl: part.mode === 'machine' ? machineUrl.toString() : undefined,
          cpuProfDir: o.cpuProfDir ? path.join(o.cpuProfDir, `product-${part.mode}-${r + 1}`) : undefined,
          rcloneFirst: r % 2 === 1,
          // The server as `npm start` runs it: the bundle (bench/audit.ts builds it first).
          bundle: process.env.BENCH_PRODUCT_BUNDLE !== '0',
          after: process.env.BENCH_PRODUCT_AFTER !== '0',
          round: r,
          log: o.progress,
        }),
      );
    }
  }
  return parts;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

/** The product-path table: medians of the rounds, and each round's figures beside. */
export function printProductReport(parts: ProductPart[], files: number): void {
  console.log(`\nDiscovery on the product path (${files} files): \`filestore start\` in a child process, mount added over the tree through the API, POST /v1/reconcile to the job's end (its finishedAt); rclone lsjson -R on the same tree in the same round`);
  for (const { mode, runs } of parts) {
    if (runs.length === 0) continue;
    const job = median(runs.map((x) => x.jobMs));
    const rclone = median(runs.map((x) => x.rclone.ms));
    const bad = runs.filter((x) => x.status !== 'succeeded' || x.counts.discovered !== files + Math.round(files / 1000));
    console.log(
      `  ${mode.padEnd(8)} job ${(job / 1000).toFixed(2)} s (median of ${runs.length}; ${Math.round((files / job) * 1000)} files/s) · rclone ${(rclone / 1000).toFixed(2)} s · ${(job / rclone).toFixed(1)}× ` +
        `(target ≤ 10×) · server CPU ${median(runs.map((x) => x.serverCpuS)).toFixed(1)} s, PostgreSQL CPU ${mode === 'embedded' ? `${median(runs.map((x) => x.postgresCpuS)).toFixed(1)} s` : 'n/a (shared server)'} · peak PSS ${Math.round(median(runs.map((x) => x.peakPssKB)) / 1024)} MB (server and walkers; target < 300 MB at 1M; each's own peak: server ${Math.round(median(runs.map((x) => x.peakServerPssKB)) / 1024)} MB, walkers ${Math.round(median(runs.map((x) => x.peakWalkersPssKB)) / 1024)} MB${mode === 'embedded' ? `; PostgreSQL apart ${Math.round(median(runs.map((x) => x.peakPostgresPssKB)) / 1024)} MB` : ''}) · outbox drained ${(median(runs.map((x) => x.outboxDrainMs)) / 1000).toFixed(2)} s after the job`,
    );
    for (const x of runs) {
      console.log(
        `    round: job ${(x.jobMs / 1000).toFixed(2)} s, rclone ${(x.rclone.ms / 1000).toFixed(2)} s, ${x.events} events, peak PSS ${Math.round(x.peakPssKB / 1024)} MB (server ${Math.round(x.peakServerPssKB / 1024)}, walkers ${Math.round(x.peakWalkersPssKB / 1024)}), ` +
          `watcher${x.watcherBackend === null ? '' : ` (${x.watcherBackend})`} on the tree ${x.watchedInJobMs === null ? 'not during the job' : `${(x.watchedInJobMs / 1000).toFixed(1)} s into the job`}, load ${x.load}${x.status === 'succeeded' ? '' : ` — ${x.status}`}` +
          (x.postgresByProcess.length > 0 ? `; PostgreSQL CPU by process: ${x.postgresByProcess.map((p) => `${p.title.replace(/^postgres: /, '').trim()} ${p.cpuS.toFixed(2)} s`).join(', ')}` : ''),
      );
    }
    if (bad.length > 0) console.log(`    INVALID: ${bad.length} round(s) failed or discovered a wrong count`);
    printAfter(mode, runs.map((x) => x.after).filter((a): a is AfterRuns => a !== null), files);
  }
}

const sec = (ms: number) => (ms / 1000).toFixed(2);
const pass = (ok: boolean) => (ok ? 'pass' : 'FAIL');
const countsLine = (c: Record<string, number>) => ['checked', 'unchanged', 'updated', 'discovered', 'missing', 'deferred'].filter((k) => c[k]).map((k) => `${k} ${c[k]}`).join(', ');
const othersLine = (o: OtherJob[]) =>
  o.length === 0
    ? 'none'
    : `${o.length} (${[...new Set(o.map((j) => j.reason))].join(', ')}; ${o.filter((j) => j.path === '').length} of the whole mount), created ${sec(Math.min(...o.map((j) => j.createdMs)))} … ${sec(Math.max(...o.map((j) => j.createdMs)))} s from our POST; their counts: ${countsLine(o.reduce<Record<string, number>>((acc, j) => {
        for (const [k, v] of Object.entries(j.counts)) if (typeof v === 'number') acc[k] = (acc[k] ?? 0) + v;
        return acc;
      }, {}))}`;

/** The unchanged, CLI and drift audits after the discovery: medians, each beside its peer and target, then each round. */
function printAfter(mode: string, after: AfterRuns[], files: number): void {
  if (after.length === 0) return;
  const entries = files + Math.round(files / 1000) + 1;
  const u = { job: median(after.map((a) => a.unchanged.ms)), seen: median(after.map((a) => a.unchanged.seenMs)), run: median(after.map((a) => a.unchanged.runMs)), rclone: median(after.map((a) => a.unchanged.rclone.ms)) };
  const cl = { wall: median(after.map((a) => a.cli.wallMs)), job: median(after.map((a) => a.cli.jobMs)), over: median(after.map((a) => a.cli.wallMs - a.cli.jobMs)), pre: median(after.map((a) => a.cli.toCreatedMs)), post: median(after.map((a) => a.cli.afterFinishMs)) };
  const d = { job: median(after.map((a) => a.drift.ms)), seen: median(after.map((a) => a.drift.seenMs)), rclone: median(after.map((a) => a.drift.rclone.ms)) };
  const watched = after.map((a) => (a.watchedAfterMs === null ? 'not watched' : `${sec(a.watchedAfterMs)} s`));
  const backends = [...new Set(after.map((a) => a.watcherBackend ?? 'none'))].join(', ');
  console.log(`  ${mode.padEnd(8)} then on the same server and tree (watcher ${backends} on the tree from ${watched.join(', ')} after the mount was added; jobs and outbox settled before each phase), medians of ${after.length}:`);
  console.log(
    `    unchanged audit: job ${sec(u.job)} s (POST → finished_at; the CLI's poll schedule saw it at ${sec(u.seen)} s; started → finished ${sec(u.run)} s) · rclone ${sec(u.rclone)} s · ${(u.job / u.rclone).toFixed(2)}× (target ≤ 1.0×) ${pass(u.job <= u.rclone)} · server CPU ${median(after.map((a) => a.unchanged.serverCpuS)).toFixed(2)} s, walkers ${median(after.map((a) => a.unchanged.walkerCpuS)).toFixed(2)} s${mode === 'embedded' ? `, PostgreSQL CPU ${median(after.map((a) => a.unchanged.postgresCpuS)).toFixed(2)} s` : ''}`,
  );
  console.log(
    `    CLI \`node cli/bin.js reconcile tree --wait\` (bundle): wall ${sec(cl.wall)} s · its job ${sec(cl.job)} s (created → finished) · wall − job ${sec(cl.over)} s (target ≤ job + 0.20 s) ${pass(cl.over <= 200)} · spawn → job created ${sec(cl.pre)} s, job finished → exit ${sec(cl.post)} s`,
  );
  console.log(
    `    1 % drift audit: job ${sec(d.job)} s (poll saw ${sec(d.seen)} s; started → finished ${sec(median(after.map((a) => a.drift.runMs)))} s) · rclone on the drifted tree ${sec(d.rclone)} s · ${(d.job / d.rclone).toFixed(2)}× (target ≤ 1.5×) ${pass(d.job <= 1.5 * d.rclone)} · server CPU ${median(after.map((a) => a.drift.serverCpuS)).toFixed(2)} s, walkers ${median(after.map((a) => a.drift.walkerCpuS)).toFixed(2)} s${mode === 'embedded' ? `, PostgreSQL CPU ${median(after.map((a) => a.drift.postgresCpuS)).toFixed(2)} s` : ''}`,
  );
  after.forEach((a, r) => {
    console.log(
      `    round ${r + 1} (rclone ${a.unchanged.rcloneFirst ? 'first' : 'after'}): unchanged job ${sec(a.unchanged.ms)} s vs rclone ${sec(a.unchanged.rclone.ms)} s = ${(a.unchanged.ms / a.unchanged.rclone.ms).toFixed(2)}× [load ${a.unchanged.load}; settled ${sec(a.unchanged.settleMs)} s before]; ` +
        `CLI wall ${sec(a.cli.wallMs)} s vs its job ${sec(a.cli.jobMs)} s (+${sec(a.cli.wallMs - a.cli.jobMs)} s, exit ${a.cli.exitCode}) [load ${a.cli.load}]; ` +
        `drift job ${sec(a.drift.ms)} s (of it started → finished ${sec(a.drift.runMs)} s) vs rclone ${sec(a.drift.rclone.ms)} s = ${(a.drift.ms / a.drift.rclone.ms).toFixed(2)}× [load ${a.drift.load}]`,
    );
    console.log(`      drift ${a.drift.drift.modified} modified / ${a.drift.drift.added} added / ${a.drift.drift.deleted} deleted; our audit: ${countsLine(a.drift.counts)}; the watcher's jobs before our end: ${othersLine(a.drift.others)}; after settling: ${a.drift.catalogue}`);
    if (a.unchanged.others.length > 0) console.log(`      other jobs during the unchanged audit: ${othersLine(a.unchanged.others)}`);
    for (const [phase, p] of Object.entries(a.profiles)) {
      if (phase === 'discovery') continue;
      console.log(`      server profile, ${phase}: busy ${p.busyMs.toFixed(0)} ms; by place ${p.byPlace.slice(0, 6).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}; self top ${p.selfTop.slice(0, 5).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`);
    }
  });
  const wrong = after.filter(
    (a) =>
      a.unchanged.status !== 'succeeded' || a.unchanged.counts.unchanged !== entries || a.unchanged.counts.updated || a.unchanged.counts.discovered || a.unchanged.counts.missing ||
      a.cli.exitCode !== 0 || a.cli.status !== 'succeeded' || a.cli.counts.unchanged !== entries ||
      a.drift.status !== 'succeeded' || !a.drift.catalogueOk,
  );
  if (wrong.length > 0) console.log(`    INVALID: ${wrong.length} round(s) with a failed job, counts other than expected (unchanged ${entries}) or a catalogue not matching the tree after the drift`);
}

/** Reasons a product round's follow-on figures are wrong (for the bench's INVALID list). */
export function afterProblems(part: ProductPart, files: number): string[] {
  const entries = files + Math.round(files / 1000) + 1;
  const out: string[] = [];
  part.runs.forEach((x, r) => {
    const a = x.after;
    if (!a) return;
    const where = `product path (${part.mode}) round ${r + 1}`;
    if (a.unchanged.status !== 'succeeded' || a.unchanged.counts.unchanged !== entries) out.push(`${where}: unchanged audit ${a.unchanged.status} ${JSON.stringify(a.unchanged.counts)}`);
    if (a.cli.exitCode !== 0 || a.cli.status !== 'succeeded' || a.cli.counts.unchanged !== entries) out.push(`${where}: CLI exit ${a.cli.exitCode}, job ${a.cli.status} ${JSON.stringify(a.cli.counts)}: ${a.cli.output}`);
    if (a.drift.status !== 'succeeded' || !a.drift.catalogueOk) out.push(`${where}: drift audit ${a.drift.status}; ${a.drift.catalogue}`);
  });
  return out;
}

// The CLI polls every 500 ms; the job's end is read from its record, so the poll only has to see it.
const POLL_MS = 250;
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const loadNow = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

/** Every process whose parent chain leads to `pid`, `pid` included. */
function processTree(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [c, p] of parentOf) if (p === out[i]) out.push(c);
  return out;
}
const treeCpu = (pid: number) => processTree(pid).reduce((s, p) => s + (processCpuSeconds(p) || 0), 0);
/** CPU seconds of each process of the tree, by pid (with its title: a PostgreSQL backend's, its checkpointer…). */
function treeCpuByPid(pid: number): Map<number, { title: string; cpuS: number }> {
  const out = new Map<number, { title: string; cpuS: number }>();
  for (const p of processTree(pid)) {
    let title = '';
    try {
      title = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    } catch {
      continue;
    }
    out.set(p, { title, cpuS: processCpuSeconds(p) || 0 });
  }
  return out;
}

async function recreateDatabase(url: string, settings: string[]): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  const admin = new URL(target);
  admin.pathname = '/postgres';
  const c = new pg.Client({ connectionString: admin.toString() });
  await c.connect();
  try {
    await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await c.query(`CREATE DATABASE "${name}"`);
    for (const s of settings) await c.query(`ALTER DATABASE "${name}" SET ${s}`);
  } finally {
    await c.end();
  }
}

/** One product-path discovery of a fresh `shape` tree. */
export async function productDiscovery(shape: TreeShape, o: ProductOptions = {}): Promise<ProductRun> {
  const log = o.log ?? (() => {});
  await ensureRclone(log);
  const cwd = await mkdtemp(path.join(os.tmpdir(), 'filestore-bench-product-'));
  await chmod(cwd, 0o755);
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  try {
    // The tree is not ./data (the mount `start` creates and watches, whose catch-up audit would
    // discover it on its own): a directory beside it, added as a mount of its own through the API.
    const treeRoot = path.join(cwd, 'tree');
    log(`product discovery: creating ${shape.dirs * shape.filesPerDir} ${o.lean ? 'empty ' : ''}files in ${treeRoot}…`);
    let tree: TreeState | null = null;
    if (o.lean) await createLeanTree(treeRoot, shape);
    else tree = await createSmallFileTree(treeRoot, shape);
    await syncAll();
    if (o.databaseUrl) await recreateDatabase(o.databaseUrl, o.databaseSettings ?? []);
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0' };
    for (const name of ['DATABASE_URL', 'REDIS_URL', 'FILESTORE_TOKEN', 'FILESTORE_API_TOKENS', 'FILESTORE_ENABLE_WATCHERS', 'FILESTORE_URL']) delete env[name];
    // Diagnosis only: the product's default is watchers on.
    if (process.env.BENCH_PRODUCT_WATCHERS) env.FILESTORE_ENABLE_WATCHERS = process.env.BENCH_PRODUCT_WATCHERS;
    if (o.databaseUrl) env.DATABASE_URL = o.databaseUrl;
    const nodeArgs: string[] = [];
    if (o.cpuProfDir) {
      await mkdir(o.cpuProfDir, { recursive: true });
      nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`);
    }
    const entry = o.bundle ? [path.join(REPO, 'dist', 'filestore.js')] : ['--import', import.meta.resolve('tsx'), path.join(REPO, 'cli', 'index.ts')];
    const proc = spawn(process.execPath, [...nodeArgs, ...entry, 'start'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    let out = '';
    proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    const t0 = performance.now();
    let url: string | undefined;
    while (!(url = /filestore running at (http:\/\/[^\s:]+:\d+)/.exec(out)?.[1])) {
      if (proc.exitCode !== null || performance.now() - t0 > 180_000) throw new Error(`filestore start did not come up:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    log(`product discovery: started in ${((performance.now() - t0) / 1000).toFixed(1)} s at ${url}`);
    // The catalogue's server: the embedded one's port is in its postmaster.pid.
    let dbUrl = o.databaseUrl;
    let pgPid: number | null = null;
    if (!dbUrl) {
      const lines = readFileSync(path.join(cwd, '.filestore', 'pg', 'postmaster.pid'), 'utf8').split('\n');
      pgPid = Number(lines[0]);
      dbUrl = `postgres://postgres@127.0.0.1:${lines[3]}/filestore`;
    }
    const db = new pg.Client({ connectionString: dbUrl });
    db.on('error', () => {}); // the server stops with the product
    await db.connect();
    try {
      const client = new FilestoreClient({ baseUrl: url });
      const mount = await client.createMount({ kind: 'local', key: 'tree', rootPath: treeRoot });
      const mountCreated = performance.now();
      // The peer on the same tree in the same run, before our job in every other round.
      const rcloneBefore = o.rcloneFirst ? await timeCommand(rcloneLsjson(treeRoot)) : null;
      const load = loadNow();
      const cpu0 = processCpuSeconds(proc.pid as number);
      const pg0 = pgPid ? treeCpu(pgPid) : Number.NaN;
      const pgBy0 = pgPid ? treeCpuByPid(pgPid) : new Map();
      const j0 = performance.now();
      const w0 = Date.now();
      const discoveryStartUs = nowUs();
      let job = await client.reconcile({ mountId: 'tree', path: '', recursive: true });
      // The work's memory: the server's process tree (its walkers included; the embedded
      // PostgreSQL apart, reported beside), summed PSS, sampled at each poll. PostgreSQL is
      // the server's child too (a session of its own); its backends are forked as the pool
      // connects, so its tree is read again at each sample (read once, before the job, the
      // backends that connected later were counted as the work's: up to ~100 MB).
      let peakPssKB = 0;
      let peakServerPssKB = 0;
      let peakWalkersPssKB = 0;
      let peakPostgresPssKB = 0;
      let peakByProcess: Array<{ title: string; pssMB: number }> = [];
      const samplePss = () => {
        const pgTree = new Set(pgPid ? processTree(pgPid) : []);
        if (pgTree.size > 0) peakPostgresPssKB = Math.max(peakPostgresPssKB, [...pgTree].reduce((sum, p) => sum + processPssKB(p), 0));
        const each = processTree(proc.pid as number)
          .filter((p) => !pgTree.has(p))
          .map((p) => ({ p, kb: processPssKB(p) }));
        const kb = each.reduce((sum, x) => sum + x.kb, 0);
        const server = each.find((x) => x.p === proc.pid)?.kb ?? 0;
        peakServerPssKB = Math.max(peakServerPssKB, server);
        peakWalkersPssKB = Math.max(peakWalkersPssKB, kb - server);
        if (kb <= peakPssKB) return;
        peakPssKB = kb;
        peakByProcess = each.map(({ p, kb: k }) => {
          let title = String(p);
          try {
            title = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ').trim().slice(0, 80);
          } catch {
            // gone meanwhile
          }
          return { title: p === proc.pid ? `server: ${title}` : title, pssMB: Math.round(k / 1024) };
        });
      };
      // When the server said it watches the tree (agent/mount-refresh.ts, once the mount
      // refresh, ≤ 30 s after the mount was added, has its backend subscribed): the
      // subscription lists the whole tree (parcel: a C++ tree of every entry, held in the
      // server's memory while the mount is watched), which a long discovery overlaps.
      let watchedInJobMs: number | null = null;
      while (!['succeeded', 'failed', 'cancelled'].includes(job.status)) {
        await new Promise((r) => setTimeout(r, POLL_MS));
        samplePss();
        if (watchedInJobMs === null && /watching [^\n]*\btree\b/.test(out)) watchedInJobMs = performance.now() - j0;
        job = await client.getJob(job.id);
      }
      // To the job's end as the server recorded it (same machine, same clock), not to the poll that saw it.
      const jobMs = job.finishedAt ? Date.parse(job.finishedAt) - w0 : performance.now() - j0;
      const windows: Record<string, { startUs: number; endUs: number }> = { discovery: { startUs: discoveryStartUs, endUs: nowUs() } };
      const serverCpuS = processCpuSeconds(proc.pid as number) - cpu0;
      const postgresCpuS = pgPid ? treeCpu(pgPid) - pg0 : Number.NaN;
      const postgresByProcess = pgPid
        ? [...treeCpuByPid(pgPid)].map(([p, v]) => ({ title: v.title.replace(/\d+\.\d+\.\d+\.\d+\(\d+\)/, '').slice(0, 60), cpuS: Math.round((v.cpuS - (pgBy0.get(p)?.cpuS ?? 0)) * 100) / 100 })).filter((x) => x.cpuS > 0.05).sort((a, b) => b.cpuS - a.cpuS)
        : [];
      const serverPssKB = processPssKB(proc.pid as number);
      const d0 = performance.now();
      for (;;) {
        const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM filestore.outbox WHERE published_at IS NULL');
        if ((rows[0]?.n ?? 0) === 0 || performance.now() - d0 > 600_000) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const outboxDrainMs = performance.now() - d0;
      const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.outbox WHERE data->>'jobId' = $1`, [String(job.id)]);
      const rclone = rcloneBefore ?? (await timeCommand(rcloneLsjson(treeRoot)));
      log(`product discovery: job ${(jobMs / 1000).toFixed(2)} s (${job.status}), outbox drained ${(outboxDrainMs / 1000).toFixed(2)} s later; rclone ${(rclone.ms / 1000).toFixed(2)} s; load ${load}`);
      if (job.status !== 'succeeded') log(`product discovery: job ${job.status}: ${JSON.stringify(job)}\n${out.slice(-3000)}`);
      const result = { counts: (job.result ?? {}) as Record<string, number> };
      const run: ProductRun = {
        jobMs,
        status: job.status,
        counts: result.counts,
        serverCpuS,
        postgresCpuS,
        postgresByProcess,
        serverPssKB,
        peakPssKB,
        peakServerPssKB,
        peakWalkersPssKB,
        peakPostgresPssKB,
        peakByProcess,
        watchedInJobMs,
        watcherBackend: treeWatcher(out),
        outboxDrainMs,
        events: rows[0]?.n ?? 0,
        rclone,
        load,
        profile: null,
        after: null,
      };
      if (o.after !== false && tree && job.status === 'succeeded') {
        run.after = await afterDiscovery({
          client,
          db,
          url,
          cwd,
          tree,
          mountId: mount.id,
          serverPid: proc.pid as number,
          pgPid,
          watchersOn: process.env.BENCH_PRODUCT_WATCHERS !== 'false' && process.env.BENCH_PRODUCT_WATCHERS !== '0',
          serverLog: () => out,
          mountCreated,
          rcloneFirst: o.rcloneFirst === true,
          round: o.round ?? 0,
          windows,
          log,
        });
      }
      await db.end().catch(() => {});
      proc.kill('SIGINT');
      await exited;
      child = null;
      if (o.cpuProfDir) {
        const files = readdirSync(o.cpuProfDir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(o.cpuProfDir as string, f));
        // The main thread's profile is the largest (tsx's loader runs in a worker of its own).
        const newest = files.map((f) => ({ f, size: statSync(f).size })).sort((a, b) => a.size - b.size).pop()?.f;
        if (newest) {
          // The phases' windows beside the profile: summarise one phase at any depth later.
          writeFileSync(`${newest}.windows.json`, JSON.stringify(windows));
          run.profile = await summariseCpuProfile(newest, REPO.replace(/\/$/, ''));
          if (run.after) for (const [phase, w] of Object.entries(windows)) run.after.profiles[phase] = await summariseCpuProfile(newest, REPO.replace(/\/$/, ''), [w], 8);
        }
      }
      return run;
    } finally {
      await db.end().catch(() => {});
    }
  } finally {
    if (child) {
      child.kill('SIGINT');
      await exited;
    }
    // The embedded server stops with the product; its data goes with the folder.
    if (process.env.BENCH_KEEP === '1') log(`kept ${cwd}`);
    else if (existsSync(cwd)) await rm(cwd, { recursive: true, force: true });
  }
}

/**
 * The CLI runs as users run it: the bundle (dist/filestore.js). Built (`tsx cli/build.ts cli`,
 * what `npm run build:cli` does) when missing or older than a file it was built from, as
 * cli/bin.js would otherwise run the sources.
 */
export async function ensureCliBundle(log: (line: string) => void): Promise<void> {
  const dist = path.join(REPO, 'dist');
  let stale: string | null = null;
  try {
    const record = JSON.parse(readFileSync(path.join(dist, 'filestore.built-from.json'), 'utf8')) as { builtAt: number; files: string[] };
    if (!existsSync(path.join(dist, 'filestore.js'))) stale = 'missing';
    else for (const f of record.files) if (!existsSync(path.join(REPO, f)) || statSync(path.join(REPO, f)).mtimeMs > record.builtAt) stale = `${f} changed since it was built`;
  } catch {
    stale = 'missing';
  }
  if (stale === null) return;
  log(`CLI bundle ${stale}: building it (tsx cli/build.ts cli)…`);
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), path.join(REPO, 'cli', 'build.ts'), 'cli'], { cwd: REPO, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`building the CLI bundle exited with ${code}`))));
  });
}

interface AfterContext {
  client: FilestoreClient;
  db: pg.Client;
  url: string;
  cwd: string;
  tree: TreeState;
  mountId: string;
  serverPid: number;
  pgPid: number | null;
  watchersOn: boolean;
  serverLog: () => string;
  mountCreated: number;
  rcloneFirst: boolean;
  round: number;
  windows: Record<string, { startUs: number; endUs: number }>;
  log: (line: string) => void;
}

const FINAL = ['succeeded', 'failed', 'cancelled'];
const countsOf = (result: unknown) => ((result ?? {}) as Record<string, number>);

/** Waits (untimed) until the mount has no queued or running job and the outbox is empty; returns how long that took. */
async function settle(c: AfterContext, what: string): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const { rows } = await c.db.query<{ jobs: number; events: number }>(
      `SELECT (SELECT count(*)::int FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND status IN ('queued', 'running')) AS jobs,
              (SELECT count(*)::int FROM filestore.outbox WHERE published_at IS NULL) AS events`,
      [c.mountId],
    );
    if (rows[0]?.jobs === 0 && rows[0]?.events === 0) break;
    if (performance.now() - t0 > 300_000) {
      c.log(`product ${what}: still ${rows[0]?.jobs} open job(s) and ${rows[0]?.events} unpublished event(s) after 300 s; measuring anyway`);
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return performance.now() - t0;
}

const lastJobId = async (c: AfterContext) => (await c.db.query<{ id: string | null }>('SELECT max(id)::text AS id FROM filestore.reconciliation_jobs WHERE mount_id = $1', [c.mountId])).rows[0]?.id ?? '0';

/** The mount's jobs after `afterId` other than `exclude`, times relative to `w0` (ms since the epoch). */
async function otherJobs(c: AfterContext, afterId: string, exclude: number | null, w0: number): Promise<OtherJob[]> {
  const { rows } = await c.db.query<{ id: string; reason: string; path: string; status: string; result: unknown; created_at: Date; finished_at: Date | null }>(
    'SELECT id, reason, path, status, result, created_at, finished_at FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND id > $2 ORDER BY id',
    [c.mountId, afterId],
  );
  return rows
    .filter((r) => Number(r.id) !== exclude)
    .map((r) => ({ id: Number(r.id), reason: r.reason, path: r.path, status: r.status, counts: countsOf(r.result), createdMs: r.created_at.getTime() - w0, finishedMs: r.finished_at ? r.finished_at.getTime() - w0 : null }));
}

/** POST /v1/reconcile (full audit) polled on the CLI's schedule to its end, rclone before or after it. */
async function timedAudit(c: AfterContext, phase: string, rcloneFirst: boolean, sinceId: string): Promise<Omit<AuditTiming, 'settleMs'>> {
  const rcloneBefore = rcloneFirst ? await timeCommand(rcloneLsjson(c.tree.root)) : null;
  const load = loadNow();
  const cpu0 = processCpuSeconds(c.serverPid);
  const pg0 = c.pgPid ? treeCpu(c.pgPid) : Number.NaN;
  const tree0 = treeCpu(c.serverPid) - (c.pgPid ? pg0 : 0);
  const startUs = nowUs();
  const p0 = performance.now();
  const w0 = Date.now();
  let job = await c.client.reconcile({ mountId: 'tree', path: '', recursive: true });
  while (!FINAL.includes(job.status)) {
    await new Promise((r) => setTimeout(r, pollDelayMs(performance.now() - p0)));
    job = await c.client.getJob(job.id);
  }
  const seenMs = performance.now() - p0;
  c.windows[phase] = { startUs, endUs: nowUs() };
  const serverCpuS = processCpuSeconds(c.serverPid) - cpu0;
  const pg1 = c.pgPid ? treeCpu(c.pgPid) : Number.NaN;
  const postgresCpuS = pg1 - pg0;
  // Walkers that exited during the job are not counted (their CPU goes to the server's cutime, not read here).
  const walkerCpuS = treeCpu(c.serverPid) - (c.pgPid ? pg1 : 0) - tree0 - serverCpuS;
  const ms = job.finishedAt ? Date.parse(job.finishedAt) - w0 : seenMs;
  const runMs = job.finishedAt && job.startedAt ? Date.parse(job.finishedAt) - Date.parse(job.startedAt) : Number.NaN;
  const rclone = rcloneBefore ?? (await timeCommand(rcloneLsjson(c.tree.root)));
  // The watcher's jobs from the phase's start (for the drift: from the first write) to our job's end.
  const others = (await otherJobs(c, sinceId, job.id, w0)).filter((j) => j.createdMs <= ms);
  return { ms, seenMs, runMs, status: job.status, counts: countsOf(job.result), serverCpuS, walkerCpuS, postgresCpuS, rclone, rcloneFirst, others, load };
}

/** The unchanged audit, the same through the CLI, then a 1 % drift and its audit: on the server and tree of the discovery. */
async function afterDiscovery(c: AfterContext): Promise<AfterRuns> {
  // The agent watches a mount added through the API from its next mount refresh (every 30 s);
  // its watcher's start makes a catch-up audit. Both before anything is measured.
  let watchedAfterMs: number | null = null;
  if (c.watchersOn) {
    const t0 = performance.now();
    while (!/watching [^\n]*\btree\b/.test(c.serverLog()) && performance.now() - t0 < 45_000) await new Promise((r) => setTimeout(r, 100));
    if (/watching [^\n]*\btree\b/.test(c.serverLog())) watchedAfterMs = performance.now() - c.mountCreated;
    else c.log('product: the server did not say it watches the tree within 45 s; measuring anyway');
  }

  // 1. The unchanged audit, beside rclone.
  let settleMs = await settle(c, 'unchanged');
  let sinceId = await lastJobId(c);
  const unchanged = { ...(await timedAudit(c, 'unchanged', c.rcloneFirst, sinceId)), settleMs };
  c.log(`product unchanged audit: job ${(unchanged.ms / 1000).toFixed(2)} s (poll saw ${(unchanged.seenMs / 1000).toFixed(2)} s) ${JSON.stringify(unchanged.counts)}; rclone ${(unchanged.rclone.ms / 1000).toFixed(2)} s; ${unchanged.others.length} other job(s)`);

  // 2. The same through the CLI as users run it (the bundle).
  await settle(c, 'CLI');
  sinceId = await lastJobId(c);
  const env: NodeJS.ProcessEnv = { ...process.env, FILESTORE_URL: c.url, FILESTORE_CLI_SOURCES: '0' };
  delete env.FILESTORE_TOKEN; // `start` without FILESTORE_API_TOKENS: authentication off on loopback
  const cliLoad = loadNow();
  const cliStartUs = nowUs();
  const spawnedAt = Date.now();
  const s0 = performance.now();
  const cliOut = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(REPO, 'cli', 'bin.js'), 'reconcile', 'tree', '--wait'], { cwd: c.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
  const wallMs = performance.now() - s0;
  c.windows.cli = { startUs: cliStartUs, endUs: nowUs() };
  const { rows: cliJobs } = await c.db.query<{ id: string; status: string; result: unknown; created_at: Date; started_at: Date | null; finished_at: Date | null }>(
    `SELECT id, status, result, created_at, started_at, finished_at FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND id > $2 AND reason = 'manual' ORDER BY id LIMIT 1`,
    [c.mountId, sinceId],
  );
  const cj = cliJobs[0];
  const cli: CliTiming = {
    wallMs,
    exitCode: cliOut.code,
    jobMs: cj?.finished_at ? cj.finished_at.getTime() - cj.created_at.getTime() : Number.NaN,
    runMs: cj?.finished_at && cj.started_at ? cj.finished_at.getTime() - cj.started_at.getTime() : Number.NaN,
    toCreatedMs: cj ? cj.created_at.getTime() - spawnedAt : Number.NaN,
    afterFinishMs: cj?.finished_at ? spawnedAt + wallMs - cj.finished_at.getTime() : Number.NaN,
    status: cj?.status ?? 'no job',
    counts: countsOf(cj?.result),
    output: cliOut.output.trim().slice(-400),
    load: cliLoad,
  };
  c.log(`product CLI reconcile --wait: wall ${(wallMs / 1000).toFixed(2)} s, its job ${(cli.jobMs / 1000).toFixed(2)} s (exit ${cliOut.code}); spawn → job created ${(cli.toCreatedMs / 1000).toFixed(2)} s, job end → exit ${(cli.afterFinishMs / 1000).toFixed(2)} s`);

  // 3. A fresh 1 % drift out of band (synced, as the harness does), then the audit; the watcher stays on.
  settleMs = await settle(c, 'drift');
  sinceId = await lastJobId(c);
  const drift = await applyDrift(c.tree, c.round);
  await syncAll();
  const d = { ...(await timedAudit(c, 'drift', c.rcloneFirst, sinceId)), settleMs };
  // Everything the drift caused settled: the catalogue must say what the tree holds.
  await settle(c, 'drift check');
  const { rows } = await c.db.query<{ state: string; n: number }>(
    `SELECT consistency_state AS state, count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND kind = 'file' AND deleted_at IS NULL GROUP BY 1 ORDER BY 1`,
    [c.mountId],
  );
  const by = Object.fromEntries(rows.map((r) => [r.state, r.n]));
  const catalogueOk = by.ACTIVE === c.tree.files.length && (by.INCONSISTENT ?? 0) === 0;
  const catalogue = `files ${JSON.stringify(by)} vs ${c.tree.files.length} on disk`;
  c.log(
    `product 1 % drift audit: job ${(d.ms / 1000).toFixed(2)} s ${JSON.stringify(d.counts)}; rclone ${(d.rclone.ms / 1000).toFixed(2)} s; watcher jobs before our end: ${d.others.length}; catalogue ${catalogue}${catalogueOk ? '' : ' — WRONG'}`,
  );
  return { watchedAfterMs, watcherBackend: treeWatcher(c.serverLog()), unchanged, cli, drift: { ...d, drift, catalogue, catalogueOk }, profiles: {} };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const files = Number(process.argv[2] ?? 100_000);
  const rounds = Number(process.argv[3] ?? 1);
  const shape = { dirs: Math.max(1, Math.round(files / 1000)), filesPerDir: Math.min(files, 1000) };
  if (process.env.BENCH_PRODUCT_BUNDLE !== '0') await ensureCliBundle((l) => console.error(`· ${l}`));
  for (let r = 0; r < rounds; r++) {
    const run = await productDiscovery(shape, {
      databaseUrl: process.env.BENCH_PRODUCT_DATABASE || undefined,
      databaseSettings: process.env.BENCH_PRODUCT_DB_SETTINGS?.split(';').filter(Boolean),
      cpuProfDir: process.env.BENCH_CPU_PROF || undefined,
      bundle: process.env.BENCH_PRODUCT_BUNDLE !== '0',
      lean: process.env.BENCH_PRODUCT_LEAN === '1',
      after: process.env.BENCH_PRODUCT_AFTER !== '0',
      log: (l) => console.error(`· ${l}`),
    });
    const { profile, ...rest } = run;
    console.log(JSON.stringify(rest));
    if (profile) {
      console.log(`profile: busy ${profile.busyMs.toFixed(0)} ms`);
      for (const [k, v] of profile.byPlace) console.log(`  place ${v.toFixed(0).padStart(7)} ms  ${k}`);
      for (const [k, v] of profile.selfTop) console.log(`  self  ${v.toFixed(0).padStart(7)} ms  ${k}`);
      for (const [k, v] of profile.inclusiveTop) console.log(`  incl  ${v.toFixed(0).padStart(7)} ms  ${k}`);
    }
  }
}
