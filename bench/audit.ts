/**
 * Audit benchmark: full reconciliation audits (createReconciler's handler, as a worker runs a
 * claimed job) next to listers that read the same facts, from one run.
 *
 *   1. Local, 100k files of 100 B – 4 KB (100 directories × 1,000): the initial audit that
 *      discovers the untracked tree, then (a) the unchanged tree and (b) a fresh 1 % drift per
 *      round (modified, added, deleted out of band) — peers: `rclone lsjson -R` and
 *      `find -printf '%p %s %T@ %m\n'` on the same tree, output to /dev/null.
 *   2. Peak RSS of full audits of a lean 1M-file tree (1,000 × 1,000 empty files), each in a
 *      child process — next to rclone's and find's peak RSS on it. By default the tree's
 *      catalogue is seeded with the rows a discovery writes and the unchanged audit is measured;
 *      BENCH_AUDIT_MILLION=discover builds it with a discovery audit instead (measured too, but
 *      far slower than the rest of the bench: see the report).
 *   3. S3, 100k keys on fauxqs in a child process: the initial audit, then unchanged audits —
 *      peers: `rclone lsjson -R --no-mimetype --use-server-modtime` (a listing, what our audit
 *      reads) with and without --fast-list in the rounds, and plain `rclone lsjson -R
 *      faux:<bucket>/<prefix>` once (it sends a HEAD per object).
 *
 *   0. Discovery on the product path, first: `filestore start` (the CLI's start, as `npm start` runs
 *      it) in a child process on embedded PostgreSQL (its default), and on the machine's
 *      PostgreSQL (DATABASE_URL: BENCH_DATABASE_URL's database with `_product` appended, made
 *      afresh each round); a mount added through the API over a fresh tree of the local part's
 *      shape; POST /v1/reconcile to the job's end, as `filestore reconcile MOUNT --wait` waits
 *      for it; `rclone lsjson -R` on the same tree in the same round (first in every other
 *      round). Then, on the same server and tree, after the watcher watches it and its jobs have
 *      settled: the unchanged audit (POST to the job's end) beside rclone; the same through the
 *      CLI as users run it (`node cli/bin.js reconcile tree --wait`, the bundle, spawn to exit)
 *      beside its job's own time; a fresh 1 % drift (out of band) and the audit beside rclone on
 *      the drifted tree, the watcher's jobs reported beside it. 5 rounds unless BENCH_ROUNDS is
 *      set (about 2 minutes a round and database at 100k on a quiet machine).
 *      The in-process figures of part 1 are its breakdown (bench/support/audit-product.ts).
 *
 * Rounds alternate the contenders (who goes first rotates) and each one's median round is
 * reported; our audits start from VACUUMed tables (autovacuum is off on the development
 * server), untimed, and an autoanalyze stand-in runs during them (bench/support/audit-job.ts).
 * Each of our audits is timed inside the handler of a running process, as a worker runs it;
 * the peers are timed from spawn to exit. rclone is installed from Debian if missing (as root;
 * otherwise the bench says how).
 *
 *   npm run bench:audit                           (3 rounds, local and S3: about 10 minutes)
 *   BENCH_AUDIT_MILLION=1 npm run bench:audit     (also the 1M-file part: about 10 more)
 *   npm run bench:audit -- --quick                (10k files and keys, 1 round: a smoke run)
 *
 * Environment: BENCH_ROUNDS (3), BENCH_AUDIT_FILES (100000: files of the local tree and keys
 * of the bucket, in directories of 1,000), BENCH_AUDIT_MILLION (unset or `0`: no 1M part;
 * `1` or `seed`: the 1M part with a seeded catalogue; `discover`: with a discovery audit),
 * BENCH_AUDIT_MILLION_FILES (1000000), BENCH_UPLOAD_CONCURRENCY (64), BENCH_AUDIT_ONLY (the
 * parts to run, of `product,local,million,s3`), BENCH_AUDIT_PRODUCT (the product path's
 * databases, of `embedded,machine`), BENCH_PRODUCT_AFTER (0: the product path's discovery
 * only), BENCH_PRODUCT_WATCHERS (false: the product without its watcher, for diagnosis), BENCH_CPU_PROF (a directory: profile this process
 * during our audits and print where their time went), BENCH_DATABASE_URL
 * (postgres://postgres@127.0.0.1:5432/filestore_bench), REDIS_URL (redis://127.0.0.1:6379/0),
 * TMPDIR (where the trees go).
 */
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { deleteMount } from '../shared/catalogue/mounts.ts';
import { ensureDatabase } from '../shared/db/ensure-database.ts';
import { createPool } from '../shared/db/pool.ts';
import { createFilestore } from '../shared/runtime.ts';
import { vacuumCatalogue } from './support/audit-job.ts';
import { localAuditPart, type BenchContext, type LocalResult } from './support/audit-local.ts';
import { millionAuditPart, type MillionMode, type MillionResult } from './support/audit-million.ts';
import { ensureRclone } from './support/audit-peers.ts';
import { startProfiling, type Profiling } from './support/audit-profile.ts';
import { afterProblems, ensureCliBundle, printProductReport, productAuditPart, type ProductPart } from './support/audit-product.ts';
import { printReport } from './support/audit-report.ts';
import { S3_PREFIX, s3AuditPart, type S3Result } from './support/audit-s3.ts';
import { run } from './support/big-write.ts';
import { FAUXQS_CHILD_FLAG, runFauxqsChild } from './support/fauxqs-child.ts';
import { machineFacts } from './support/machine.ts';
import { envInt, fmt } from './support/measure.ts';
import { traceSql } from './support/sql-trace.ts';

if (process.argv[2] === FAUXQS_CHILD_FLAG) {
  await runFauxqsChild(process.argv.slice(3));
} else {
  await main();
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const config = {
    databaseUrl: process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/filestore_bench',
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0',
  };
  const files = quick ? 10_000 : envInt('BENCH_AUDIT_FILES', 100_000);
  const shape = { dirs: Math.max(1, Math.round(files / 1000)), filesPerDir: Math.min(files, 1000) };
  const millionFiles = envInt('BENCH_AUDIT_MILLION_FILES', 1_000_000);
  const millionShape = { dirs: Math.max(1, Math.round(millionFiles / 1000)), filesPerDir: Math.min(millionFiles, 1000) };
  const only = new Set((process.env.BENCH_AUDIT_ONLY ?? 'product,local,million,s3').split(',').map((p) => p.trim()));
  const productModes = (process.env.BENCH_AUDIT_PRODUCT ?? 'embedded,machine').split(',').map((m) => m.trim()).filter((m): m is 'embedded' | 'machine' => m === 'embedded' || m === 'machine');
  const millionEnv = process.env.BENCH_AUDIT_MILLION ?? '';
  if (!['', '0', '1', 'seed', 'discover'].includes(millionEnv)) throw new Error('BENCH_AUDIT_MILLION must be 0, 1, seed or discover');
  // Off by default: the 1M part alone takes longer than the rest of the bench (minutes to seed,
  // minutes to audit, a minute to clean up).
  const million = only.has('million') && millionEnv !== '' && millionEnv !== '0';
  const millionMode: MillionMode = millionEnv === 'discover' ? 'discover' : 'seed';
  const rounds = quick ? 1 : Math.max(1, envInt('BENCH_ROUNDS', 3));
  const uploadConcurrency = envInt('BENCH_UPLOAD_CONCURRENCY', 64);
  const cpuProfDir = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
  const script = fileURLToPath(import.meta.url);
  const started = performance.now();
  const progress = (line: string) => console.log(`· [${fmt((performance.now() - started) / 1000, 0)} s] ${line}`);

  const rcloneVersion = await ensureRclone(progress);
  const tempDir = await mkdtemp(join(os.tmpdir(), 'filestore-bench-audit-'));
  const onSignal = () => {
    rmSync(tempDir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);

  await ensureDatabase(config.databaseUrl);
  const core = await createFilestore({
    ...config,
    migrate: true,
    relay: true,
    // Recovery and rollup compaction every 30 s would land inside some measurements and not others.
    maintenanceIntervalMs: 3_600_000,
    s3: { credentials: { accessKeyId: 'test', secretAccessKey: 'test' } },
    log: (l) => console.error(`[filestore] ${l}`),
  });
  let fsOpen = true;
  const ctx: BenchContext = { core, trace: traceSql(), tempDir, rounds, progress, mounts: [], invalid: [] };
  let profiling: Profiling | null = null;
  let local: LocalResult | null = null;
  let s3: S3Result | null = null;
  let big: MillionResult | null = null;
  let product: ProductPart[] | null = null;
  try {
    await vacuumCatalogue(core.pool);
    const machine = await machineFacts(core.pool, tempDir, config.redisUrl);
    machine.push(['rclone', rcloneVersion], ['find', (await run('find', ['--version'])).split('\n')[0] as string]);
    console.log('Machine');
    for (const [label, value] of machine) if (label !== 'cp') console.log(`  ${label}: ${value}`);
    console.log(
      `Shape: local ${shape.dirs} × ${shape.filesPerDir} files of 100 B – 4 KB; S3 the same keys under ${S3_PREFIX}; ${rounds} round(s); ` +
        `1M part ${million ? `${millionShape.dirs} × ${millionShape.filesPerDir} empty files, catalogue by ${millionMode === 'seed' ? 'seeding' : 'a discovery audit'}` : 'not run (BENCH_AUDIT_MILLION=1 runs it)'}\n`,
    );
    if (cpuProfDir) profiling = await startProfiling();

    if (only.has('product') && productModes.length > 0) {
      // 5 rounds unless BENCH_ROUNDS says otherwise (a round: a fresh tree, start, discovery, then the unchanged, CLI and drift audits).
      const productRounds = quick ? 1 : process.env.BENCH_ROUNDS ? rounds : 5;
      // The server (dist/filestore.js, as npm start runs it) and the CLI are the bundle.
      if (process.env.BENCH_PRODUCT_AFTER !== '0' || process.env.BENCH_PRODUCT_BUNDLE !== '0') await ensureCliBundle(progress);
      const p0 = performance.now();
      product = await productAuditPart(shape, { rounds: productRounds, modes: productModes, machineUrl: config.databaseUrl, cpuProfDir, progress });
      progress(`product path: ${productRounds} round(s) × ${productModes.join(' and ')} in ${fmt((performance.now() - p0) / 60_000, 1)} min`);
    }
    if (only.has('local')) {
      local = await localAuditPart(ctx, shape);
      await rm(join(tempDir, 'local-tree'), { recursive: true, force: true });
    }
    if (only.has('s3')) s3 = await s3AuditPart(ctx, script, shape, uploadConcurrency);

    // The 1M audits run in children; this process's relay and pool would only compete with them.
    const profile = await profiling?.stop(cpuProfDir as string);
    profiling = null;
    await core.close();
    fsOpen = false;
    await dropMounts(config.databaseUrl, config.redisUrl, ctx.mounts.splice(0), progress);
    if (million) {
      const pool = createPool(config.databaseUrl, 2);
      try {
        big = await millionAuditPart({ pool, config, tempDir, progress, mounts: ctx.mounts, invalid: ctx.invalid }, millionShape, millionMode);
      } finally {
        await pool.end();
      }
    }
    progress('all parts done');
    if (product) {
      printProductReport(product, shape.dirs * shape.filesPerDir);
      console.log('The in-process figures below are the breakdown (the handler timed inside this process, tables vacuumed before each audit).');
      for (const part of product) for (const x of part.runs) if (x.status !== 'succeeded') ctx.invalid.push(`product path (${part.mode}): job ${x.status}`);
      for (const part of product) ctx.invalid.push(...afterProblems(part, shape.dirs * shape.filesPerDir));
    }
    await printReport({ local, s3, big, invalid: ctx.invalid, profile: profile ?? null, repoRoot: fileURLToPath(new URL('..', import.meta.url)) });
    if (ctx.invalid.length > 0) process.exitCode = 1;
  } finally {
    await profiling?.stop(cpuProfDir as string).catch(() => null);
    if (fsOpen) await core.close().catch(() => undefined);
    const t0 = performance.now();
    await rm(tempDir, { recursive: true, force: true });
    console.log(`Cleanup: removed ${tempDir} in ${fmt((performance.now() - t0) / 1000, 1)} s.`);
    await dropMounts(config.databaseUrl, config.redisUrl, ctx.mounts, (l) => console.log(l));
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
}

/** Removes the bench mounts' rows (nodes, snapshots, outbox, jobs) and cache keys, then vacuums what they left. */
async function dropMounts(databaseUrl: string, redisUrl: string, mountIds: string[], log: (line: string) => void): Promise<void> {
  if (mountIds.length === 0) return;
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2 });
  try {
    for (const id of mountIds) {
      const keys: string[] = [];
      for await (const batch of redis.scanStream({ match: `filestore:cache:${id}:*`, count: 1000 })) keys.push(...(batch as string[]));
      if (keys.length > 0) await redis.del(...keys);
    }
  } catch (err) {
    console.error(`cleanup: could not delete the cache keys of the bench mounts: ${(err as Error).message}`);
  } finally {
    redis.disconnect();
  }
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    for (const id of mountIds) {
      const t0 = performance.now();
      try {
        const { nodes } = await deleteMount(client, id);
        log(`Cleanup: deleted bench mount ${id} (${nodes} nodes) in ${fmt((performance.now() - t0) / 1000, 1)} s.`);
      } catch (err) {
        console.error(`cleanup: could not delete mount ${id}: ${(err as Error).message}`);
      }
    }
    await vacuumCatalogue(client);
  } finally {
    await client.end();
  }
}
