/**
 * The API write benchmark (issue 17): 4 KB `PUT /v1/files` from 16 keep-alive clients against
 * the product as users start it — `filestore start` (what `npm start` runs after its build
 * step: the bundled CLI, embedded PostgreSQL, the watcher on, auth off on loopback) in a child
 * process — beside, in the same run and on the same disk:
 *   - the peer: the durable atomic write by hand (temp file, write, fsync, rename, directory
 *     fsync), 16-way;
 *   - the floor: that write between two synchronous commits of a small row (the journal's
 *     `pending` and final records), 16-way, on the product's own embedded PostgreSQL;
 *   - a breakdown: the tuned in-process server (createFilestore + serveApi in a child, on the
 *     machine's PostgreSQL, no watcher), its SQL statements counted per write;
 *   - optionally (BENCH_API_NO_WATCH=1) the product with FILESTORE_ENABLE_WATCHERS=false: what
 *     the watcher costs per write;
 *   - optionally (BENCH_API_BASELINE=<another checkout>, BENCH_API_BASELINE_ENV='NAME=value …')
 *     that checkout's product, bundled from its sources: before/after in one run.
 * Rounds alternate the contenders (bench/support/rounds.ts); each figure is the median round.
 */
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, realpath, rm } from 'node:fs/promises';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { hashToken } from '../../shared/api/auth.ts';
import { createMount, deleteMount } from '../../shared/catalogue/mounts.ts';
import { ensureDatabase } from '../../shared/db/ensure-database.ts';
import { migrate } from '../../shared/db/migrate.ts';
import { bundleCli, DIST_DIR } from '../../cli/bundle.ts';
import { API_CHILD_FLAG, spawnServer, type ServerChild } from './api-servers.ts';
import { run } from './big-write.ts';
import { summariseCpuProfile } from './cpu-profile.ts';
import { buildRequest, runHttpLoad, type LoadResult } from './http-load.ts';
import { envInt, fmt, formatTable } from './measure.ts';
import { processCpuSeconds } from './proc.ts';
import { alternateRounds, medianRun } from './rounds.ts';
import { bodyOf, floorWrites, FLOOR_TABLE_SQL, fsSmallWrites, type SmallWriteShape } from './small-writes.ts';
import type { StatementTally } from './sql-trace.ts';

const TARGET_RATIO = 0.2;
const START_BUNDLE = join(DIST_DIR, 'filestore.js');

interface Round {
  ms: number;
  writesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Server process CPU µs per write (NaN for the peers). */
  serverUs: number;
  /** CPU µs per write of the PostgreSQL processes of the product's embedded server (NaN elsewhere). */
  postgresUs: number;
  /** Per write, from pg_stat_database / pg_stat_wal of the product's embedded server. */
  commitsPerWrite: number;
  walSyncsPerWrite: number;
  machineBusy: number;
  errors: number;
  errorSamples: string[];
  sql?: StatementTally[] | undefined;
  window?: { startUs: number; endUs: number } | undefined;
}

/** `filestore start` in a child process, as a user starts it. */
interface Product {
  name: string;
  url: string;
  pid: number;
  folder: string;
  databaseUrl: string;
  postgresCpuSeconds(): number;
  stop(): Promise<void>;
  child: ChildProcess;
}

export async function writesBench(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const shape = {
    rounds: quick ? 1 : Math.max(1, envInt('BENCH_ROUNDS', 5)),
    durationMs: quick ? 2000 : envInt('BENCH_API_SECONDS', 5) * 1000,
    warmupMs: quick ? 500 : envInt('BENCH_API_WARMUP_MS', 1000),
    connections: envInt('BENCH_API_CONNECTIONS', 16),
    bytes: envInt('BENCH_API_BYTES', 4096),
    peerWrites: quick ? 1000 : envInt('BENCH_API_PEER_WRITES', 4000),
    floorWrites: quick ? 500 : envInt('BENCH_API_FLOOR_WRITES', 2000),
    breakdown: process.env.BENCH_API_BREAKDOWN !== 'off',
    noWatch: process.env.BENCH_API_NO_WATCH === '1',
  };
  const databaseUrl = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/filestore_bench_api';
  const cpuProfDir = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
  const ticks = Number((await run('getconf', ['CLK_TCK']).catch(() => '100')).trim()) || 100;
  const progress = (line: string) => console.log(`· ${line}`);

  const tempDir = await mkdtemp(join(os.tmpdir(), 'filestore-bench-writes-'));
  await chmod(tempDir, 0o755); // as root, the embedded server runs as user postgres and must reach its data
  const stops: Array<() => Promise<void>> = [];
  const pids: number[] = [];
  const onSignal = () => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
    rmSync(tempDir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);

  let breakdownMount: { id: string } | null = null;
  try {
    progress("npm start's build step (cli/bundle.ts: dist/filestore.js)…");
    await bundleCli();
    progress('starting the product: node dist/filestore.js start (embedded PostgreSQL, watcher on)…');
    const products: Product[] = [];
    const product = await startProduct('filestore start (npm start)', join(tempDir, 'product'), {}, cpuProfDir, ticks);
    stops.push(product.stop);
    pids.push(product.pid);
    products.push(product);
    const baseline = process.env.BENCH_API_BASELINE ? resolve(process.env.BENCH_API_BASELINE) : undefined;
    if (baseline) {
      // Another checkout (an older commit, `git archive <commit> | tar -x -C <dir>` with node_modules linked): its own bundle, same shape.
      progress(`bundling the baseline's CLI (${baseline})…`);
      await run(process.execPath, ['--import', import.meta.resolve('tsx'), '--input-type=module', '-e', `await (await import(${JSON.stringify(join(baseline, 'cli/bundle.ts'))})).bundleCli()`]);
      const env = Object.fromEntries((process.env.BENCH_API_BASELINE_ENV ?? '').split(/\s+/).filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      progress(`starting the baseline product (${JSON.stringify(env)})…`);
      const base = await startProduct(`baseline: ${baseline}`, join(tempDir, 'product-baseline'), env, cpuProfDir, ticks, join(baseline, 'dist', 'filestore.js'));
      stops.push(base.stop);
      pids.push(base.pid);
      products.push(base);
    }
    if (shape.noWatch) {
      progress('starting the product with FILESTORE_ENABLE_WATCHERS=false…');
      const quiet = await startProduct('filestore start, watcher off', join(tempDir, 'product-nowatch'), { FILESTORE_ENABLE_WATCHERS: 'false' }, cpuProfDir, ticks);
      stops.push(quiet.stop);
      pids.push(quiet.pid);
      products.push(quiet);
    }

    // The floor's rows: a database of their own on the product's embedded server.
    const floorUrl = product.databaseUrl.replace(/\/[^/]+$/, '/bench_floor');
    await ensureDatabase(floorUrl);
    const floorPool = new pg.Pool({ connectionString: floorUrl, max: shape.connections });
    stops.push(() => floorPool.end());
    await floorPool.query(FLOOR_TABLE_SQL);

    let breakdown: { server: ServerChild; mountKey: string; token: string } | null = null;
    if (shape.breakdown) {
      progress(`starting the in-process breakdown server (createFilestore + serveApi, inline events, ${databaseUrl})…`);
      await ensureDatabase(databaseUrl);
      await migrate(databaseUrl, () => {});
      const root = join(tempDir, 'breakdown-mount');
      await mkdir(root);
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      try {
        const m = await createMount(client, { key: `bench-writes-${randomBytes(4).toString('hex')}`, kind: 'local', rootPath: root });
        breakdownMount = { id: m.id };
        const token = `fs_${randomBytes(32).toString('base64url')}`;
        const server = await spawnServer({
          script: fileURLToPath(new URL('../api.ts', import.meta.url)),
          flag: API_CHILD_FLAG,
          args: [databaseUrl, 'inline', 'filestore:read,filestore:write'],
          env: { BENCH_API_TOKEN_SHA256: hashToken(token) },
          cpuProfDir,
          ticksPerSecond: ticks,
          traceSql: true,
        });
        stops.push(server.stop);
        pids.push(server.pid);
        breakdown = { server, mountKey: m.key, token };
      } finally {
        await client.end();
      }
    }

    console.log('Machine');
    console.log(`  nproc: ${os.cpus().length} (${os.cpus()[0]?.model ?? '?'}); load average (1, 5, 15 min) at start: ${os.loadavg().map((l) => l.toFixed(2)).join(', ')}`);
    console.log(`  node ${process.version}; temp dir ${tempDir} (${(await run('df', ['-T', tempDir]).catch(() => '')).split('\n').pop()?.trim().split(/\s+/).slice(0, 2).join(' on ')})`);
    console.log(`  product's embedded PostgreSQL: ${await settingsOf(product.databaseUrl)}`);
    console.log(
      `Shape: PUT /v1/files, ${shape.bytes} B each, a new file per request in 16 directories, ${shape.connections} keep-alive connections, closed loop; ` +
        `${fmt(shape.warmupMs / 1000, 1)} s warm-up + ${fmt(shape.durationMs / 1000, 1)} s measured per server per round; ` +
        `peers: ${shape.peerWrites} (by hand) and ${shape.floorWrites} (floor) writes ×${shape.connections} per round; ${shape.rounds} rounds alternating\n`,
    );

    const shapeFor = (writes: number): SmallWriteShape => ({ warmup: Math.min(200, writes), writes, concurrency: shape.connections, bytes: shape.bytes, dirs: 16 });
    const peerRoot = join(tempDir, 'peer');
    const load = async (round: number, url: string, mountKey: string, headers: Record<string, string>, serverPid: number, pgCpu: (() => number) | null, statsUrl: string | null, sql?: () => Promise<StatementTally[]>): Promise<Round> => {
      const target = new URL('/v1/files', url);
      const prefix = `r${round}-${randomBytes(3).toString('hex')}`;
      const requestAt = (n: number) => {
        target.search = `?mountId=${encodeURIComponent(mountKey)}&path=${encodeURIComponent(`${prefix}/d${n % 16}/f-${n}.bin`)}`;
        return buildRequest(target, { ...headers, 'content-type': 'application/octet-stream' }, 'PUT', bodyOf(n, shape.bytes));
      };
      const stats0 = statsUrl ? await dbStats(statsUrl) : null;
      await sql?.(); // counting starts now (the warm-up's statements are in it: divided by all answers below)
      let answered = 0;
      const result = await runHttpLoad({
        url,
        headers,
        connections: shape.connections,
        warmupMs: shape.warmupMs,
        durationMs: shape.durationMs,
        requestAt,
        check: (status, body) => {
          answered++;
          return status === 200 ? null : `HTTP ${status}: ${body.toString('utf8', 0, Math.min(body.length, 300))}`;
        },
        cpuProbes: { server: () => processCpuSeconds(serverPid, ticks), ...(pgCpu ? { postgres: pgCpu } : {}) },
      });
      const tally = await sql?.();
      const stats1 = statsUrl ? await dbStats(statsUrl) : null;
      return roundOf(result, stats0 && stats1 ? { commits: stats1.commits - stats0.commits, walSyncs: stats1.walSyncs - stats0.walSyncs } : null, tally, answered);
    };

    const contenders = [
      ...products.map((p) => ({
        name: p.name,
        run: (r: number) => load(r, p.url, 'local', {}, p.pid, p.postgresCpuSeconds, p.databaseUrl),
      })),
      { name: 'peer: durable write by hand', run: async (r: number) => peerRound(await fsSmallWrites(join(peerRoot, `hand${r}`), shapeFor(shape.peerWrites), true)) },
      {
        name: 'floor: durable write + 2 synchronous commits',
        run: async (r: number) => {
          const pg0 = product.postgresCpuSeconds();
          const t = await floorWrites((text, v) => floorPool.query(text, v), join(peerRoot, `floor${r}`), shapeFor(shape.floorWrites), r);
          // The product's PostgreSQL serves the floor's rows: its CPU per write (the warm-up's writes included).
          return { ...peerRound(t), postgresUs: ((product.postgresCpuSeconds() - pg0) * 1e6) / (t.ops + Math.min(200, shape.floorWrites)) };
        },
      },
      ...(breakdown
        ? [
            {
              name: 'breakdown: in-process API server, machine PostgreSQL, no watcher',
              run: (r: number) => {
                const b = breakdown as NonNullable<typeof breakdown>;
                return load(r, b.server.url, b.mountKey, { authorization: `Bearer ${b.token}` }, b.server.pid, null, null, b.server.sql);
              },
            },
          ]
        : []),
    ];
    // Each contender once, unmeasured: the JIT, the pools and the directories warm.
    progress('warm-up of every server…');
    for (const p of products) await load(99, p.url, 'local', {}, p.pid, null, null);
    if (breakdown) await load(99, breakdown.server.url, breakdown.mountKey, { authorization: `Bearer ${breakdown.token}` }, breakdown.server.pid, null, null);
    const results = await alternateRounds(shape.rounds, contenders, { progress, setup: async () => void (await rm(peerRoot, { recursive: true, force: true })) });
    report(results, products.map((p) => p.name), shape.connections);

    const errors = [...results.values()].flat().reduce((n, x) => n + x.errors, 0);
    if (errors > 0) {
      console.log(`\nINVALID: ${errors} requests failed; first: ${[...results.values()].flat().flatMap((x) => x.errorSamples).slice(0, 3).join(' | ')}`);
      process.exitCode = 1;
    }
    if (cpuProfDir) {
      for (const stop of stops.splice(0).reverse()) await stop().catch(() => {});
      for (const p of products) await reportProfile(cpuProfDir, p.pid, p.name, results.get(p.name) ?? []).catch((e: Error) => console.error(`profile: ${e.message}`));
      if (breakdown) await reportProfile(cpuProfDir, breakdown.server.pid, 'breakdown', results.get(contenders[contenders.length - 1]?.name ?? '') ?? []).catch((e: Error) => console.error(`profile: ${e.message}`));
    }
  } finally {
    for (const stop of stops.reverse()) await stop().catch((e: Error) => console.error(`stop: ${e.message}`));
    if (breakdownMount) {
      const client = new pg.Client({ connectionString: databaseUrl });
      await client.connect();
      await deleteMount(client, breakdownMount.id).catch((e: Error) => console.error(`cleanup: ${e.message}`));
      await client.end();
    }
    await rm(tempDir, { recursive: true, force: true }).catch(() => {});
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
}

function peerRound(t: { opsPerSecond: number; seconds: number; p50Ms: number; p99Ms: number; machineBusy: number }): Round {
  return {
    ms: t.seconds * 1000,
    writesPerSecond: t.opsPerSecond,
    p50Ms: t.p50Ms,
    p99Ms: t.p99Ms,
    serverUs: Number.NaN,
    postgresUs: Number.NaN,
    commitsPerWrite: Number.NaN,
    walSyncsPerWrite: Number.NaN,
    machineBusy: t.machineBusy,
    errors: 0,
    errorSamples: [],
  };
}

function roundOf(r: LoadResult, stats: { commits: number; walSyncs: number } | null, sql: StatementTally[] | undefined, answered: number): Round {
  const per = (n: number | undefined) => ((n ?? Number.NaN) * 1e6) / r.requests;
  return {
    // Ranked by rate: the median round is the one with the median writes/s.
    ms: -r.requestsPerSecond,
    writesPerSecond: r.requestsPerSecond,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    serverUs: per(r.probedCpuSeconds.server),
    postgresUs: per(r.probedCpuSeconds.postgres),
    // Over the whole run (warm-up included): every answer, not only the measured ones.
    commitsPerWrite: stats ? stats.commits / answered : Number.NaN,
    walSyncsPerWrite: stats ? stats.walSyncs / answered : Number.NaN,
    machineBusy: r.machineBusy,
    errors: r.errors,
    errorSamples: r.errorSamples,
    sql: sql && mergeStatements(sql).map((t) => ({ ...t, calls: t.calls / answered, ms: t.ms / answered, rows: t.rows / answered })),
    window: r.window,
  };
}

/**
 * Statements sent as text with their values in it (simple protocol: file-commit.ts's
 * `BEGIN; EXECUTE name(…); COMMIT; …`) under one label each, not one per value.
 */
function mergeStatements(sql: StatementTally[]): StatementTally[] {
  const byLabel = new Map<string, StatementTally>();
  for (const t of sql) {
    const executed = /^BEGIN; EXECUTE (\w+)\(/.exec(t.label);
    const label = executed ? `BEGIN; EXECUTE ${executed[1] as string}(…); COMMIT; unlock (one round trip)` : t.label;
    const s = byLabel.get(label) ?? { label, calls: 0, ms: 0, rows: 0 };
    byLabel.set(label, { label, calls: s.calls + t.calls, ms: s.ms + t.ms, rows: s.rows + t.rows });
  }
  return [...byLabel.values()].sort((a, b) => b.ms - a.ms);
}

function report(results: Map<string, Round[]>, productNames: string[], connections: number): void {
  const peerName = 'peer: durable write by hand';
  const floorName = 'floor: durable write + 2 synchronous commits';
  console.log('\nEvery round (writes/s):');
  for (const [name, rounds] of results) console.log(`  ${name}: ${rounds.map((x) => fmt(x.writesPerSecond, 0)).join(', ')}`);
  const peerRounds = results.get(peerName) ?? [];
  for (const name of [...productNames, floorName]) {
    const rounds = results.get(name) ?? [];
    console.log(`  ratio to the by-hand write of the same round, ${name}: ${rounds.map((x, i) => `${fmt(x.writesPerSecond / (peerRounds[i]?.writesPerSecond ?? Number.NaN), 2)}×`).join(', ')}`);
  }

  console.log('\nIn detail (median round of each, by writes/s)');
  console.log(
    formatTable(
      ['writer', 'writes/s', 'p50 ms', 'p99 ms', 'server CPU µs/write', 'postgres CPU µs/write', 'commits/write', 'WAL fsyncs/write', 'machine CPU busy', 'errors (all rounds)'],
      [...results].map(([name, rounds]) => {
        const m = medianRun(rounds);
        return [
          name,
          fmt(m.writesPerSecond, 0),
          fmt(m.p50Ms, 2),
          fmt(m.p99Ms, 2),
          fmt(m.serverUs, 0),
          fmt(m.postgresUs, 0),
          fmt(m.commitsPerWrite, 2),
          fmt(m.walSyncsPerWrite, 2),
          `${fmt(m.machineBusy * 100, 0)} %`,
          String(rounds.reduce((n, x) => n + x.errors, 0)),
        ];
      }),
    ),
  );
  for (const [name, rounds] of results) {
    const sql = medianRun(rounds).sql;
    if (!sql) continue;
    const calls = sql.reduce((n, t) => n + t.calls, 0);
    console.log(`\nSQL round trips per write of ${name} (median round): ${fmt(calls, 2)}`);
    console.log(formatTable(['statement', 'calls/write', 'ms waited/write', 'rows/write'], sql.map((t) => [t.label, fmt(t.calls, 3), fmt(t.ms, 2), fmt(t.rows, 2)])));
  }

  const peer = medianRun(peerRounds);
  const floor = medianRun(results.get(floorName) ?? []);
  const rows = productNames.map((name) => {
    const m = medianRun(results.get(name) ?? []);
    const ratio = m.writesPerSecond / peer.writesPerSecond;
    return [`4 KB PUT ×${connections}, ${name}: writes/s`, fmt(m.writesPerSecond, 0), fmt(peer.writesPerSecond, 0), `${fmt(ratio, 2)}×`, fmt(floor.writesPerSecond, 0), `${fmt(floor.writesPerSecond / peer.writesPerSecond, 2)}×`, `≥ ${TARGET_RATIO}× peer`, ratio >= TARGET_RATIO ? 'pass' : 'FAIL'];
  });
  console.log('\nSummary (peer: the durable atomic write by hand, 16-way; floor: the same between two synchronous commits of a small row; medians of the rounds)');
  console.log(formatTable(['metric', 'filestore', 'peer', 'ratio', 'floor', 'floor ÷ peer', 'target', 'pass/fail'], rows));
  console.log(`load average now (1, 5, 15 min): ${os.loadavg().map((l) => l.toFixed(2)).join(', ')}`);
}

/** Starts `node dist/filestore.js start` in `folder`, as a newcomer would (no database, Redis or tokens configured). */
async function startProduct(name: string, folder: string, extraEnv: Record<string, string>, cpuProfDir: string | undefined, ticks: number, bundle = START_BUNDLE): Promise<Product> {
  await mkdir(folder, { recursive: true });
  await chmod(folder, 0o755);
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0', ...extraEnv };
  for (const v of ['DATABASE_URL', 'REDIS_URL', 'FILESTORE_TOKEN', 'FILESTORE_API_TOKENS', 'FILESTORE_URL', 'FILESTORE_ENABLE_WATCHERS']) if (!(v in extraEnv)) delete env[v];
  const profile = cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : [];
  const child = spawn(process.execPath, [...profile, bundle, 'start'], { cwd: folder, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  const url = await new Promise<string>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${name}: no start within 120 s:\n${out}`)), 120_000);
    const more = (d: Buffer) => {
      out += d.toString();
      const m = /filestore running at (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m && /^try, in another shell/m.test(out)) {
        clearTimeout(timer);
        res(m[1] as string);
      }
    };
    child.stdout.on('data', more);
    child.stderr.on('data', more);
    void exited.then(() => rej(new Error(`${name}: exited before it started:\n${out}`)));
  });
  // Keep reading (a full pipe would block the server), remember only the tail.
  child.stdout.removeAllListeners('data').on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  child.stderr.removeAllListeners('data').on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
  const pgDir = await realpath(join(folder, '.filestore', 'pg'));
  const [postmaster, , , port] = readFileSync(join(pgDir, 'postmaster.pid'), 'utf8').split('\n');
  const postmasterPid = Number(postmaster);
  const pgSeen = new Map<number, number>();
  return {
    name,
    url,
    pid: child.pid as number,
    folder,
    child,
    databaseUrl: `postgres://postgres@127.0.0.1:${Number(port)}/filestore`,
    postgresCpuSeconds: () => {
      // A backend that exited keeps the CPU it was last seen with: summing only the live ones
      // made the figure drop (even below zero) when a pool closed connections in a window.
      for (const pid of [postmasterPid, ...childrenOf(postmasterPid)]) {
        const cpu = processCpuSeconds(pid, ticks);
        if (Number.isFinite(cpu)) pgSeen.set(pid, cpu);
      }
      return [...pgSeen.values()].reduce((s, v) => s + v, 0);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Pids whose parent is `ppid` (/proc/<pid>/stat). */
function childrenOf(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === ppid) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

async function dbStats(url: string): Promise<{ commits: number; walSyncs: number }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    // Statistics reach the shared counters when a backend goes idle (at most once a second): wait that out.
    await new Promise((r) => setTimeout(r, 1100));
    const { rows } = await client.query<{ commits: string; syncs: string }>(
      'SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits, (SELECT wal_sync FROM pg_stat_wal) AS syncs',
    );
    return { commits: Number(rows[0]?.commits), walSyncs: Number(rows[0]?.syncs) };
  } finally {
    await client.end();
  }
}

async function settingsOf(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const v = await client.query<{ v: string }>('SELECT version() AS v');
    const s = await client.query<{ name: string; setting: string }>(
      "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync', 'wal_sync_method', 'autovacuum', 'commit_delay', 'shared_buffers') ORDER BY name",
    );
    return `${(v.rows[0]?.v ?? '').split(' on ')[0]}; ${s.rows.map((r) => `${r.name}=${r.setting}`).join(', ')}`;
  } finally {
    await client.end();
  }
}

/** Where one server's CPU went in its measured windows (BENCH_CPU_PROF). */
async function reportProfile(dir: string, pid: number, name: string, rounds: Round[]): Promise<void> {
  const file = (await readdir(dir)).find((f) => {
    const parts = f.split('.');
    return f.endsWith('.cpuprofile') && parts[3] === String(pid) && parts[4] === '0';
  });
  if (!file) throw new Error(`no .cpuprofile of pid ${pid} in ${dir}`);
  const repoRoot = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
  const windows = rounds.flatMap((r) => (r.window ? [r.window] : []));
  const s = await summariseCpuProfile(join(dir, file), repoRoot, windows, 25);
  const writes = rounds.reduce((n, r) => n + r.writesPerSecond * ((r.window ? r.window.endUs - r.window.startUs : 0) / 1e6), 0);
  console.log(`\nCPU profile of ${name}: ${join(dir, file)}`);
  console.log(`Measured windows only: ${fmt(s.busyMs, 0)} ms busy for ~${fmt(writes, 0)} writes = ${fmt((s.busyMs * 1000) / writes, 0)} µs per write.`);
  const rows = (top: Array<[string, number]>) => top.map(([n, ms]) => [n, fmt(ms, 0), `${fmt((ms / s.busyMs) * 100, 1)} %`, fmt((ms * 1000) / writes, 1)]);
  const header = (what: string) => [what, 'ms', 'share of busy', 'µs/write'];
  console.log(`\nSelf time by where the code lives\n${formatTable(header('place'), rows(s.byPlace))}`);
  console.log(`\nSelf time by function\n${formatTable(header('function'), rows(s.selfTop))}`);
  console.log(`\nInclusive time by function (callees included)\n${formatTable(header('function'), rows(s.inclusiveTop))}`);
}
