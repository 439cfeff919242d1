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
 * Run on its own (a reproduction of the product-path figure):
 *   npx tsx bench/support/audit-product.ts [files] [rounds]
 * Environment: BENCH_PRODUCT_DATABASE (unset: embedded; a postgres:// URL: the product on
 * that server, its database dropped and created afresh each round), BENCH_CPU_PROF (a
 * directory: the server runs with --cpu-prof there and its profile is summarised),
 * BENCH_PRODUCT_BUNDLE (1: run dist/filestore.js, which must be built; default: the sources
 * through tsx, the same code), BENCH_PRODUCT_LEAN (1: empty files, made fast: the 1M tree),
 * BENCH_KEEP (1: keep the folder, its embedded database included).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { FilestoreClient } from '../../shared/client/index.ts';
import { ensureRclone, timeCommand, rcloneLsjson, type PeerRun } from './audit-peers.ts';
import { createLeanTree, createSmallFileTree, type TreeShape } from './audit-trees.ts';
import { syncAll } from './big-write.ts';
import { summariseCpuProfile, type ProfileSummary } from './cpu-profile.ts';
import { processCpuSeconds, processPssKB } from './proc.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

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
  /** Each process of that tree at the peak. */
  peakByProcess: Array<{ title: string; pssMB: number }>;
  /** From the job's end until the outbox held no unpublished event. */
  outboxDrainMs: number;
  /** Events the audit wrote (outbox rows of its job). */
  events: number;
  rclone: PeerRun;
  load: string;
  profile: ProfileSummary | null;
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
      o.progress(`product path (${part.mode}), round ${r + 1}/${o.rounds}: start, add the mount, reconcile --wait; rclone ${r % 2 === 1 ? 'first' : 'after'}…`);
      part.runs.push(
        await productDiscovery(shape, {
          databaseUrl: part.mode === 'machine' ? machineUrl.toString() : undefined,
          cpuProfDir: o.cpuProfDir ? path.join(o.cpuProfDir, `product-${part.mode}-${r + 1}`) : undefined,
          rcloneFirst: r % 2 === 1,
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
        `(target ≤ 10×) · server CPU ${median(runs.map((x) => x.serverCpuS)).toFixed(1)} s, PostgreSQL CPU ${mode === 'embedded' ? `${median(runs.map((x) => x.postgresCpuS)).toFixed(1)} s` : 'n/a (shared server)'} · peak PSS ${Math.round(median(runs.map((x) => x.peakPssKB)) / 1024)} MB (server and walkers) · outbox drained ${(median(runs.map((x) => x.outboxDrainMs)) / 1000).toFixed(2)} s after the job`,
    );
    for (const x of runs) {
      console.log(`    round: job ${(x.jobMs / 1000).toFixed(2)} s, rclone ${(x.rclone.ms / 1000).toFixed(2)} s, ${x.events} events, load ${x.load}${x.status === 'succeeded' ? '' : ` — ${x.status}`}`);
    }
    if (bad.length > 0) console.log(`    INVALID: ${bad.length} round(s) failed or discovered a wrong count`);
  }
}

// The CLI polls every 500 ms; the job's end is read from its record, so the poll only has to see it.
const POLL_MS = 250;
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
    if (o.lean) await createLeanTree(treeRoot, shape);
    else await createSmallFileTree(treeRoot, shape);
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
      await client.createMount({ kind: 'local', key: 'tree', rootPath: treeRoot });
      // The peer on the same tree in the same run, before our job in every other round.
      const rcloneBefore = o.rcloneFirst ? await timeCommand(rcloneLsjson(treeRoot)) : null;
      const load = loadNow();
      const cpu0 = processCpuSeconds(proc.pid as number);
      const pg0 = pgPid ? treeCpu(pgPid) : Number.NaN;
      const pgBy0 = pgPid ? treeCpuByPid(pgPid) : new Map();
      const j0 = performance.now();
      const w0 = Date.now();
      let job = await client.reconcile({ mountId: 'tree', path: '', recursive: true });
      // The work's memory: the server's process tree (its walkers included; the embedded
      // PostgreSQL apart), summed PSS, sampled at each poll.
      let peakPssKB = 0;
      let peakByProcess: Array<{ title: string; pssMB: number }> = [];
      // The embedded PostgreSQL is the server's child too (a session of its own): left out here.
      const pgTree = new Set(pgPid ? processTree(pgPid) : []);
      const samplePss = () => {
        const each = processTree(proc.pid as number)
          .filter((p) => !pgTree.has(p))
          .map((p) => ({ p, kb: processPssKB(p) }));
        const kb = each.reduce((sum, x) => sum + x.kb, 0);
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
      while (!['succeeded', 'failed', 'cancelled'].includes(job.status)) {
        await new Promise((r) => setTimeout(r, POLL_MS));
        samplePss();
        job = await client.getJob(job.id);
      }
      // To the job's end as the server recorded it (same machine, same clock), not to the poll that saw it.
      const jobMs = job.finishedAt ? Date.parse(job.finishedAt) - w0 : performance.now() - j0;
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
        peakByProcess,
        outboxDrainMs,
        events: rows[0]?.n ?? 0,
        rclone,
        load,
        profile: null,
      };
      await db.end().catch(() => {});
      proc.kill('SIGINT');
      await exited;
      child = null;
      if (o.cpuProfDir) {
        const files = readdirSync(o.cpuProfDir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(o.cpuProfDir as string, f));
        // The main thread's profile is the largest (tsx's loader runs in a worker of its own).
        const newest = files.map((f) => ({ f, size: statSync(f).size })).sort((a, b) => a.size - b.size).pop()?.f;
        if (newest) run.profile = await summariseCpuProfile(newest, REPO.replace(/\/$/, ''));
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

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const files = Number(process.argv[2] ?? 100_000);
  const rounds = Number(process.argv[3] ?? 1);
  const shape = { dirs: Math.max(1, Math.round(files / 1000)), filesPerDir: Math.min(files, 1000) };
  for (let r = 0; r < rounds; r++) {
    const run = await productDiscovery(shape, {
      databaseUrl: process.env.BENCH_PRODUCT_DATABASE || undefined,
      databaseSettings: process.env.BENCH_PRODUCT_DB_SETTINGS?.split(';').filter(Boolean),
      cpuProfDir: process.env.BENCH_CPU_PROF || undefined,
      bundle: process.env.BENCH_PRODUCT_BUNDLE === '1',
      lean: process.env.BENCH_PRODUCT_LEAN === '1',
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
