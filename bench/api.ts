/**
 * API benchmarks, each server in a child process of its own, the load from this process
 * (bench/support/http-load.ts).
 *
 * Writes (the default; issue 17, bench/support/api-writes.ts): 4 KB `PUT /v1/files` from 16
 * keep-alive clients against the product as users start it (`npm start`: the bundled CLI's
 * `start`, embedded PostgreSQL, the watcher on), beside the durable atomic write by hand and the
 * floor (that write between two synchronous commits of a small row) in the same run, and the
 * tuned in-process server on the machine's PostgreSQL as a breakdown (its SQL round trips per
 * write counted). Median of 5 alternating rounds.
 *
 *   npm run bench:api                   (5 rounds: 1 s warm-up + 5 s measured per server)
 *   npm run bench:api -- --quick        (1 short round: a smoke run)
 *
 * Environment: BENCH_ROUNDS (5), BENCH_API_SECONDS (5), BENCH_API_WARMUP_MS (1000),
 * BENCH_API_CONNECTIONS (16), BENCH_API_BYTES (4096), BENCH_API_PEER_WRITES (4000),
 * BENCH_API_FLOOR_WRITES (2000), BENCH_API_BREAKDOWN (`off` skips the in-process server),
 * BENCH_API_NO_WATCH (1: also the product with FILESTORE_ENABLE_WATCHERS=false),
 * BENCH_CPU_PROF (a directory: V8 CPU profiles of the servers, summarised over the measured
 * windows), BENCH_DATABASE_URL (the breakdown's database,
 * postgres://postgres@127.0.0.1:5432/filestore_bench_api), TMPDIR (where everything is written).
 *
 * Reads (`npm run bench:api -- --reads`): `GET /v1/nodes/by-path` on a warm cache, 32
 * concurrent keep-alive connections, auth on, next to a bare node:http server answering the
 * same bytes (the transport's limit), from one run. Rounds alternate ours (Redis cache), the
 * peer, ours (inline cache, as under `npm start` without Redis), and each one's median round
 * is reported.
 *
 *   npm run bench:api -- --reads             (3 rounds of 1 s warm-up + 5 s measured, per server)
 *   npm run bench:api -- --reads --quick     (1 round of 0.5 s + 1 s: a smoke run)
 *
 * Environment (reads): BENCH_ROUNDS (3), BENCH_API_SECONDS (5), BENCH_API_WARMUP_MS (1000),
 * BENCH_API_CONNECTIONS (32), BENCH_API_FILES (300), BENCH_API_INLINE (`off` skips the inline
 * server), BENCH_CPU_PROF, BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/filestore_bench),
 * REDIS_URL (redis://127.0.0.1:6379/0), TMPDIR (where the mount goes).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { hashToken } from '../shared/api/auth.ts';
import { createMount, deleteMount } from '../shared/catalogue/mounts.ts';
import { ensureDatabase } from '../shared/db/ensure-database.ts';
import { createFilestore } from '../shared/runtime.ts';
import {
  API_CHILD_FLAG,
  BARE_CHILD_FLAG,
  runApiServerChild,
  runBareServerChild,
  spawnServer,
  type ServerChild,
} from './support/api-servers.ts';
import { run } from './support/big-write.ts';
import { writesBench } from './support/api-writes.ts';
import { summariseCpuProfile } from './support/cpu-profile.ts';
import { runHttpLoad, type LoadResult } from './support/http-load.ts';
import { processCpuSeconds } from './support/proc.ts';
import { machineFacts } from './support/machine.ts';
import { envInt, fmt, formatTable, runConcurrent } from './support/measure.ts';

const TARGET_PATH = 'docs/readme.md';
const TARGET_RATIO = 0.35;

if (process.argv[2] === API_CHILD_FLAG) {
  await runApiServerChild(process.argv.slice(3));
} else if (process.argv[2] === BARE_CHILD_FLAG) {
  await runBareServerChild(process.argv.slice(3));
} else if (process.argv.includes('--reads')) {
  await readsBench();
} else {
  await writesBench();
}

interface Contender {
  name: string;
  server: ServerChild;
  expectedBody: Buffer;
  rounds: LoadResult[];
}

async function readsBench(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const config = {
    databaseUrl: process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/filestore_bench',
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0',
  };
  if (config.redisUrl === 'inline') throw new Error('REDIS_URL=inline: this bench measures the Redis cache, and the inline one next to it');
  const shape = {
    rounds: quick ? 1 : Math.max(1, envInt('BENCH_ROUNDS', 3)),
    durationMs: quick ? 1000 : envInt('BENCH_API_SECONDS', 5) * 1000,
    warmupMs: quick ? 500 : envInt('BENCH_API_WARMUP_MS', 1000),
    connections: envInt('BENCH_API_CONNECTIONS', 32),
    files: envInt('BENCH_API_FILES', 300),
    inline: process.env.BENCH_API_INLINE !== 'off',
  };
  const cpuProfDir = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;

  const tempDir = await mkdtemp(join(os.tmpdir(), 'filestore-bench-api-'));
  const children: ServerChild[] = [];
  const profiled: Contender[] = [];
  const onSignal = () => {
    for (const c of children) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(tempDir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  const progress = (line: string) => console.log(`· ${line}`);

  await ensureDatabase(config.databaseUrl);
  const core = await createFilestore({ ...config, migrate: true, log: (l) => console.error(`[filestore] ${l}`) });
  const mountRoot = join(tempDir, 'mount');
  await mkdir(mountRoot);
  let fsOpen = true;
  const closeFs = async () => {
    if (fsOpen) await core.close();
    fsOpen = false;
  };
  const mount = await createMount(core.pool, { key: `bench-${randomUUID().slice(0, 12)}`, kind: 'local', rootPath: mountRoot });

  try {
    progress(`writing ${shape.files} files through the orchestrator into mount ${mount.key}…`);
    const prepared = await runConcurrent(shape.files, 8, async (i) => {
      const path = i === 0 ? TARGET_PATH : `${['docs', 'src/core', 'src/api', 'assets', 'notes'][i % 5]}/file-${String(i).padStart(4, '0')}.md`;
      await core.orchestrator.writeFile(mount.key, { path }, Readable.from([fileBody(i)]));
    });
    console.log('Machine');
    for (const [label, value] of await machineFacts(core.pool, tempDir, config.redisUrl)) {
      if (label !== 'cp') console.log(`  ${label}: ${value}`);
    }
    // The servers read the catalogue from their own processes; ours has nothing to do meanwhile.
    await closeFs();

    const ticksPerSecond = Number((await run('getconf', ['CLK_TCK']).catch(() => '100')).trim()) || 100;
    const script = fileURLToPath(import.meta.url);
    const token = `fs_${randomBytes(32).toString('base64url')}`;
    const headers = { authorization: `Bearer ${token}` };
    const query = `/v1/nodes/by-path?mountId=${encodeURIComponent(mount.key)}&path=${encodeURIComponent(TARGET_PATH)}`;
    const spawnOurs = (redisUrl: string) =>
      spawnServer({
        script,
        flag: API_CHILD_FLAG,
        args: [config.databaseUrl, redisUrl],
        env: { BENCH_API_TOKEN_SHA256: hashToken(token) },
        cpuProfDir,
        ticksPerSecond,
      }).then((s) => (children.push(s), s));

    progress('starting our API server (Redis cache) in a child process…');
    const redisServer = await spawnOurs(config.redisUrl);
    const redisBody = await warm(redisServer.url + query, headers);
    const contenders: Contender[] = [{ name: 'Filestore API, Redis cache', server: redisServer, expectedBody: redisBody, rounds: [] }];

    const bodyFile = join(tempDir, 'peer-body.json');
    await writeFile(bodyFile, redisBody);
    progress(`starting the peer (bare node:http answering the same ${redisBody.length} bytes) in a child process…`);
    const bare = await spawnServer({ script, flag: BARE_CHILD_FLAG, args: [bodyFile], ticksPerSecond }).then((s) => (children.push(s), s));
    await warm(bare.url + query, headers, redisBody);
    const peer: Contender = { name: 'peer: bare node:http, constant body', server: bare, expectedBody: redisBody, rounds: [] };
    contenders.push(peer);

    if (shape.inline) {
      progress('starting our API server (inline cache) in a child process…');
      const inline = await spawnOurs('inline');
      const inlineBody = await warm(inline.url + query, headers);
      contenders.push({ name: 'Filestore API, inline cache', server: inline, expectedBody: inlineBody, rounds: [] });
    }
    profiled.push(...contenders.filter((c) => c !== peer));
    // On this machine Redis competes for the same cores; its CPU is part of what a cached read costs.
    const redisPid = await redisServerPid(config.redisUrl);
    const redisCpuSeconds = () => (redisPid === null ? Number.NaN : processCpuSeconds(redisPid, ticksPerSecond));

    console.log(
      `Shape: GET ${query} (${redisBody.length} B of node JSON, bearer token), ${shape.connections} keep-alive connections, ` +
        `closed loop; ${fmt(shape.warmupMs / 1000, 1)} s warm-up + ${fmt(shape.durationMs / 1000, 1)} s measured per server per round; ` +
        `${shape.files} files in the mount (written in ${fmt(prepared.seconds, 1)} s)\n`,
    );

    for (let r = 0; r < shape.rounds; r++) {
      for (const c of contenders) {
        progress(`round ${r + 1}/${shape.rounds} — ${c.name}…`);
        const result = await runHttpLoad({
          url: c.server.url + query,
          headers,
          connections: shape.connections,
          warmupMs: shape.warmupMs,
          durationMs: shape.durationMs,
          expectedBody: c.expectedBody,
          cpuProbes: { server: c.server.cpuSeconds, redis: redisCpuSeconds },
        });
        if (result.errors > 0) console.log(`  ${result.errors} errors, e.g.:\n    ${result.errorSamples.join('\n    ')}`);
        c.rounds.push(result);
      }
    }
    report(contenders, peer, shape.connections);

    const errors = contenders.reduce((n, c) => n + c.rounds.reduce((m, x) => m + x.errors, 0), 0);
    if (errors > 0) {
      console.log(`\nINVALID: ${errors} requests failed (above); figures that include errors measure nothing.`);
      process.exitCode = 1;
    }
  } finally {
    await Promise.all(children.map((c) => c.stop()));
    for (const c of cpuProfDir ? profiled : []) {
      await reportProfile(cpuProfDir as string, c).catch((e: Error) => console.error(`profile: ${e.message}`));
    }
    await closeFs().catch(() => undefined);
    await rm(tempDir, { recursive: true, force: true });
    await dropMount(config.databaseUrl, config.redisUrl, mount.id);
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
}

/** A few hundred bytes to a few KB of text, different for every file. */
function fileBody(i: number): Buffer {
  const line = `# file ${i}\nLorem ipsum dolor sit amet, consectetur adipiscing elit ${i}.\n`;
  return Buffer.from(line.repeat(8 + (i % 48)));
}

/**
 * Fills the cache (and the server's JIT) with a few sequential requests, checks the answer and
 * returns its bytes: every answer in the measured rounds must equal them.
 */
async function warm(url: string, headers: Record<string, string>, expected?: Buffer): Promise<Buffer> {
  let body = Buffer.alloc(0);
  for (let i = 0; i < 20; i++) {
    const res = await fetch(url, { headers });
    body = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200) throw new Error(`warm-up: GET ${url} answered ${res.status}: ${body.toString('utf8')}`);
  }
  if (expected && !body.equals(expected)) throw new Error(`warm-up: GET ${url} answered unexpected bytes: ${body.toString('utf8')}`);
  const node = JSON.parse(body.toString('utf8')) as { path?: unknown };
  if (node.path !== TARGET_PATH) throw new Error(`warm-up: GET ${url} answered a node at ${String(node.path)}, not ${TARGET_PATH}`);
  return body;
}

function report(contenders: Contender[], peer: Contender, connections: number): void {
  const median = (c: Contender) => [...c.rounds].sort((a, b) => a.requestsPerSecond - b.requestsPerSecond)[Math.floor(c.rounds.length / 2)] as LoadResult;
  console.log('\nEvery round (requests/s):');
  for (const c of contenders) console.log(`  ${c.name}: ${c.rounds.map((x) => fmt(x.requestsPerSecond, 0)).join(', ')}`);
  // Each round's ratio to the peer's run right after or before it, which drifts less than the medians on a shared host.
  for (const c of contenders) {
    if (c === peer) continue;
    const ratios = c.rounds.map((x, r) => `${fmt(x.requestsPerSecond / (peer.rounds[r] as LoadResult).requestsPerSecond, 2)}×`);
    console.log(`  ratio to the peer's run in the same round, ${c.name}: ${ratios.join(', ')}`);
  }

  console.log(`\nIn detail (median round of each server, by requests/s)`);
  const micros = (cpuSeconds: number, requests: number) => fmt((cpuSeconds * 1e6) / requests, 0);
  console.log(
    formatTable(
      ['server', 'requests/s', 'p50 ms', 'p99 ms', 'max ms', 'server CPU (cores)', 'server CPU µs/answer', 'redis-server CPU µs/answer', 'load generator CPU µs/answer', 'machine CPU busy', 'errors (all rounds)'],
      contenders.map((c) => {
        const m = median(c);
        return [
          c.name,
          fmt(m.requestsPerSecond, 0),
          fmt(m.p50Ms, 2),
          fmt(m.p99Ms, 2),
          fmt(m.maxMs, 1),
          fmt((m.probedCpuSeconds.server ?? Number.NaN) / m.seconds, 2),
          micros(m.probedCpuSeconds.server ?? Number.NaN, m.requests),
          micros(m.probedCpuSeconds.redis ?? Number.NaN, m.requests),
          micros(m.generatorCpuSeconds, m.requests),
          `${fmt(m.machineBusy * 100, 0)} %`,
          String(c.rounds.reduce((n, x) => n + x.errors, 0)),
        ];
      }),
    ),
  );

  const p = median(peer);
  const ratio = (a: number, b: number) => `${fmt(a / b, 2)}×`;
  const rows: string[][] = [];
  for (const c of contenders) {
    if (c === peer) continue;
    const m = median(c);
    const cache = c.name.includes('inline') ? 'inline cache' : 'Redis cache';
    const label = `by-path ×${connections}, ${cache}`;
    const pass = m.requestsPerSecond >= TARGET_RATIO * p.requestsPerSecond;
    rows.push(
      [`${label}: requests/s`, fmt(m.requestsPerSecond, 0), fmt(p.requestsPerSecond, 0), ratio(m.requestsPerSecond, p.requestsPerSecond), `≥ ${TARGET_RATIO}× peer`, pass ? 'pass' : 'FAIL'],
      [`${label}: p50 ms`, fmt(m.p50Ms, 2), fmt(p.p50Ms, 2), ratio(m.p50Ms, p.p50Ms), '—', '—'],
      [`${label}: p99 ms`, fmt(m.p99Ms, 2), fmt(p.p99Ms, 2), ratio(m.p99Ms, p.p99Ms), '—', '—'],
    );
  }
  console.log('\nSummary (peer: bare node:http answering the same bytes, same load; ratio = filestore ÷ peer)');
  console.log(formatTable(['metric', 'filestore', 'peer', 'ratio', 'target', 'pass/fail'], rows));
  console.log(
    `The server, redis-server and the load generator share this machine's ${os.cpus().length} cores (see machine CPU busy). ` +
      'CPU µs/answer = CPU time used in the measured window ÷ answers in it: /proc/<pid>/stat for the server and ' +
      'redis-server, process.cpuUsage() for the generator. A server runs its JavaScript on one core: near 1.00 ' +
      'cores its event loop is the bottleneck.',
  );
}

/** The pid of the Redis server when it runs on this machine (INFO server), else null. */
async function redisServerPid(url: string): Promise<number | null> {
  const redis = new Redis(url, { maxRetriesPerRequest: 2 });
  try {
    const pid = Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1]);
    return Number.isSafeInteger(pid) && Number.isFinite(processCpuSeconds(pid)) ? pid : null;
  } finally {
    redis.disconnect();
  }
}

/** Where one of our servers spent its CPU in the measured windows (BENCH_CPU_PROF). */
async function reportProfile(dir: string, c: Contender): Promise<void> {
  // CPU.<date>.<time>.<pid>.<thread>.<sequence>.cpuprofile; thread 0 is the main thread (tsx's loader has another).
  const file = (await readdir(dir)).find((f) => {
    const parts = f.split('.');
    return f.endsWith('.cpuprofile') && parts[3] === String(c.server.pid) && parts[4] === '0';
  });
  if (!file) throw new Error(`no .cpuprofile of pid ${c.server.pid} in ${dir}`);
  const repoRoot = fileURLToPath(new URL('..', import.meta.url)).replace(/\/$/, '');
  const s = await summariseCpuProfile(join(dir, file), repoRoot, c.rounds.map((r) => r.window));
  const answers = c.rounds.reduce((n, r) => n + r.requests, 0);
  console.log(`\nCPU profile of ${c.name}: ${join(dir, file)} (open it in Chrome DevTools or speedscope)`);
  console.log(`Measured windows only: ${fmt(s.busyMs, 0)} ms busy for ${answers} answers = ${fmt((s.busyMs * 1000) / answers, 0)} µs per answer.`);
  const rows = (top: Array<[string, number]>) => top.map(([name, ms]) => [name, fmt(ms, 0), `${fmt((ms / s.busyMs) * 100, 1)} %`, fmt((ms * 1000) / answers, 1)]);
  const header = (what: string) => [what, 'ms', 'share of busy', 'µs/answer'];
  console.log(`\nSelf time by where the code lives\n${formatTable(header('place'), rows(s.byPlace))}`);
  console.log(`\nSelf time by function\n${formatTable(header('function'), rows(s.selfTop))}`);
  console.log(`\nInclusive time by function (callees included)\n${formatTable(header('function'), rows(s.inclusiveTop))}`);
}

/** Removes the bench mount's rows and its cache keys (after the servers stopped, so nothing races it). */
async function dropMount(databaseUrl: string, redisUrl: string, mountId: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const t0 = performance.now();
    const { nodes } = await deleteMount(client, mountId);
    console.log(`Cleanup: deleted the bench mount (${nodes} nodes) in ${fmt((performance.now() - t0) / 1000, 2)} s.`);
  } catch (err) {
    console.error(`cleanup: could not delete mount ${mountId}: ${(err as Error).message}`);
  } finally {
    await client.end();
  }
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2 });
  try {
    const keys: string[] = [];
    for await (const batch of redis.scanStream({ match: `filestore:cache:${mountId}:*`, count: 1000 })) keys.push(...(batch as string[]));
    if (keys.length > 0) await redis.del(...keys);
  } catch (err) {
    console.error(`cleanup: could not delete the cache keys of mount ${mountId}: ${(err as Error).message}`);
  } finally {
    redis.disconnect();
  }
}
