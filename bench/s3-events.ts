/**
 * S3-event benchmark (issue 14 §4), two figures from one run on one fauxqs:
 *
 *   1. Throughput: records/s through the S3-event Lambda's handler (lambdas/s3-events.ts, its
 *      container core built once), batches of 10 as SQS hands them over, records of a batch in
 *      parallel, batch after batch (one container). Each event reports its object's size and
 *      ETag, as S3's do. Two workloads: the events of Filestore's own writes (their report
 *      matches the catalogue: sequencer stored, no HEAD: what most events are) and new
 *      objects written outside Filestore (HEAD, drift, an inline reconciliation each).
 *      Two more rows say where the time goes: the own-write batches delivered again (dropped
 *      by their stored sequencers, no HEAD), and fresh own writes through processS3Events on
 *      the container's core without the Lambda shell (no middy/Powertools, no outbox flush).
 *      Floor: the same number of HEAD requests alone, in the same batches of 10 in parallel,
 *      on the same fauxqs (a child process), each right after its batch went through the
 *      handler (interleaved: both see the same load). Target: handler >= 0.5x the floor.
 *      Beside it, the durable floor: the same HEADs then two synchronous commits of a one-row
 *      table (what a batch that changes the catalogue cannot do without: its nodes with their
 *      events, and their publication mark), and the same HEADs then the first commit alone
 *      (what lies inside the handler's duration: the mark completes after it returns). That
 *      one's ratio to the HEADs alone is the best ratio any handler that commits durably could
 *      reach here. Also printed:
 *      SQL round trips per batch and the time they kept the handler waiting (pg.Client.query;
 *      BENCH_S3_EVENTS_SQL_TOP=n lists the n largest statements).
 *   2. Latency: an out-of-band PutObject (through the S3 proxy; the bridge sends its record to
 *      the fauxqs queue) to the `filestore.node.reconciled` event for that key on Redis
 *      (`filestore:events`), with the poller (Lambda's event source mapping) polling every
 *      BENCH_S3_EVENTS_POLL_MS after an empty receive. Figures beyond the poll interval.
 *      Target p99 < 1 s.
 *
 *   npm run bench:s3-events
 *
 * Environment: BENCH_S3_EVENTS_RECORDS (1000 per workload), BENCH_S3_EVENTS_WRITES (200
 * latency samples), BENCH_S3_EVENTS_POLL_MS (100), BENCH_S3_EVENTS_DATABASE_URL
 * (postgres://postgres@127.0.0.1:5432/filestore_bench_s3_events), BENCH_S3_EVENTS_REDIS_URL
 * (redis://127.0.0.1:6379/0; events are matched by mount), BENCH_S3_EVENTS_PROFILE (a file:
 * the new-object workload under the V8 CPU profiler; beside it `<file>.windows.json`, the
 * handler's invocations, to summarise only them: bench/support/cpu-profile.ts `windows`).
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import type { SQSEvent, SQSRecord } from 'aws-lambda';
import { Redis } from 'ioredis';
import pg from 'pg';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { ensureDatabase } from '../shared/db/ensure-database.ts';
import { migrate } from '../shared/db/migrate.ts';
import { EVENTS_CHANNEL } from '../shared/events/bus.ts';
import { wireFilestore } from '../shared/runtime.ts';
import { TEST_COMMAND_SECRET } from '../tests/support/command-secret.ts';
import { lambdaContext } from '../tests/support/lambda-context.ts';
import { formEncodeKey, startS3Notifications } from '../tests/support/s3-notifications.ts';
import { startS3Proxy } from '../tests/support/s3-proxy.ts';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { fileURLToPath } from 'node:url';
import { putRawKey, TEST_S3_CREDENTIALS, testS3Client } from '../tests/support/s3.ts';
import { FAUXQS_CHILD_FLAG, runFauxqsChild, spawnFauxqs } from './support/fauxqs-child.ts';
import { createSqsPoller } from '../tests/support/sqs-poller.ts';
import { envInt, percentile } from './support/measure.ts';
import { traceSql } from './support/sql-trace.ts';

const RECORDS = envInt('BENCH_S3_EVENTS_RECORDS', 1000);
const WRITES = envInt('BENCH_S3_EVENTS_WRITES', 200);
const POLL_MS = envInt('BENCH_S3_EVENTS_POLL_MS', 100);
const DATABASE_URL = process.env.BENCH_S3_EVENTS_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/filestore_bench_s3_events';
const REDIS_URL = process.env.BENCH_S3_EVENTS_REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const BATCH = 10;

async function main(): Promise<void> {
  await ensureDatabase(DATABASE_URL);
  await migrate(DATABASE_URL);
  Object.assign(process.env, {
    DATABASE_URL,
    REDIS_URL,
    FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET,
    AWS_ACCESS_KEY_ID: TEST_S3_CREDENTIALS.accessKeyId,
    AWS_SECRET_ACCESS_KEY: TEST_S3_CREDENTIALS.secretAccessKey,
    AWS_REGION: 'us-east-1',
    POWERTOOLS_LOG_LEVEL: 'ERROR',
    POWERTOOLS_METRICS_DISABLED: 'true',
  });
  // Imported once the environment is set: the container's logger and core read it.
  const { handler } = await import('../lambdas/s3-events.ts');
  const { closeLambdaCore } = await import('../lambdas/support/core.ts');
  const { logger } = await import('../lambdas/support/powertools.ts');
  const { lambdaCore } = await import('../lambdas/support/core.ts');
  const { processS3Events } = await import('../shared/reconcile/s3-events/process.ts');
  logger.setLogLevel('ERROR');

  // fauxqs in a process of its own: the handler and the HEAD floor both reach it over TCP,
  // and neither shares its event loop with the server.
  const server = await spawnFauxqs(fileURLToPath(import.meta.url), `bench-${randomBytes(4).toString('hex')}`);
  const client = testS3Client(server.endpoint);
  const s3 = {
    endpoint: server.endpoint,
    client,
    createBucket: async () => {
      const bucket = `bench-${randomBytes(6).toString('hex')}`;
      await client.send(new CreateBucketCommand({ Bucket: bucket }));
      return bucket;
    },
    stop: async () => {
      client.destroy();
      await server.stop();
    },
  };
  const proxy = await startS3Proxy(s3.endpoint);
  // The writer of Filestore's own objects: a core of its own, as the API Lambda would be.
  const writer = await wireFilestore({ databaseUrl: DATABASE_URL, redisUrl: REDIS_URL, poolSize: 4, s3: { credentials: TEST_S3_CREDENTIALS } });
  const newMount = async (): Promise<Mount> => {
    const bucket = await s3.createBucket();
    return createMount(writer.pool, { key: `bench-${randomBytes(5).toString('hex')}`, kind: 's3', bucket, prefix: 'tenant/', endpoint: s3.endpoint, region: 'us-east-1' });
  };
  let seq = BigInt(Date.now()) * 1000n;
  // As S3 reports a creation: the object's size and ETag (looked up before the timed part, as
  // the test bridge does right after a write).
  const record = (bucket: string, key: string, i: number, reported: { size: number; eTag: string }): SQSRecord => {
    seq += 1n;
    const body = JSON.stringify({ Records: [{ eventVersion: '2.1', eventSource: 'aws:s3', eventName: 'ObjectCreated:Put', s3: { bucket: { name: bucket }, object: { key: formEncodeKey(key), size: reported.size, eTag: reported.eTag, sequencer: seq.toString(16).toUpperCase() } } }] });
    return { messageId: `m-${i}`, receiptHandle: `r-${i}`, body, attributes: { ApproximateReceiveCount: '1', SentTimestamp: '0', SenderId: 'bench', ApproximateFirstReceiveTimestamp: '0' }, messageAttributes: {}, md5OfBody: '', eventSource: 'aws:sqs', eventSourceARN: 'arn:aws:sqs:us-east-1:000000000000:bench', awsRegion: 'us-east-1' };
  };
  // The durable floor's two commits: a client of its own (not traced), a one-row table.
  const probe = new pg.Client({ connectionString: DATABASE_URL });
  await probe.connect();
  await probe.query('CREATE TABLE IF NOT EXISTS public.bench_s3_commit_probe (id int PRIMARY KEY, v bigint NOT NULL)');
  // Its statements are not the handler's: sent around the SQL trace (which wraps every pg.Client).
  const untraced = pg.Client.prototype.query as (this: pg.Client, text: string, values?: unknown[]) => Promise<unknown>;
  const probeQuery = (text: string, values?: unknown[]) => untraced.call(probe, text, values);
  const sql = traceSql();

  /** One workload: `keys` already written; the handler's batches, then the HEAD floor, same keys. */
  const throughput = async (label: string, mount: Mount, keys: string[], shell = true, replay?: SQSEvent[]) => {
    const bucket = mount.bucket as string;
    const batches: SQSEvent[] = replay ?? [];
    if (!replay) {
      const reported = new Map<string, { size: number; eTag: string }>();
      for (let i = 0; i < keys.length; i += 16) {
        await Promise.all(
          keys.slice(i, i + 16).map(async (Key) => {
            const h = await s3.client.send(new HeadObjectCommand({ Bucket: bucket, Key }));
            reported.set(Key, { size: h.ContentLength ?? 0, eTag: (h.ETag ?? '').replace(/"/g, '') });
          }),
        );
      }
      for (let i = 0; i < keys.length; i += BATCH) batches.push({ Records: keys.slice(i, i + BATCH).map((k, j) => record(bucket, k, i + j, reported.get(k) as { size: number; eTag: string })) });
    }
    sql.reset();
    let failed = 0;
    // Without the shell: the same work on the container's core, no middy/Powertools, no outbox flush.
    const { core } = await lambdaCore();
    const invoke = shell ? handler : (event: SQSEvent) => processS3Events(core, event, undefined, {});
    const head = s3.client;
    // Interleaved: a batch through the handler, then its keys' HEADs alone, so that both see the
    // same load (the machine is shared). Between the two, untimed, the outbox rows' mark the
    // handler sent without waiting (OutboxRelay.settled): in Lambda it completes after the
    // handler returned, outside its duration; here it must not land in the floor's time.
    let handlerMs = 0;
    let floorMs = 0;
    // This process's CPU (user + system) in each phase: the load on a shared machine stretches
    // wall time, not this.
    let handlerCpu = 0;
    let floorCpu = 0;
    let durableMs = 0;
    let durableOneMs = 0;
    for (let b = 0; b < batches.length; b++) {
      const event = batches[b] as SQSEvent;
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const w0 = process.hrtime.bigint();
      failed += (await invoke(event, lambdaContext({ functionName: 's3-events' }))).batchItemFailures.length;
      handlerMs += performance.now() - t0;
      handlerWindows.push({ startUs: Number(w0 / 1000n), endUs: Number(process.hrtime.bigint() / 1000n) });
      const c1 = process.cpuUsage(c0);
      handlerCpu += (c1.user + c1.system) / 1000;
      await (core.relay as { settled?: () => Promise<void> } | null)?.settled?.();
      const c2 = process.cpuUsage();
      const t1 = performance.now();
      await Promise.all(keys.slice(b * BATCH, (b + 1) * BATCH).map((Key) => head.send(new HeadObjectCommand({ Bucket: bucket, Key }))));
      floorMs += performance.now() - t1;
      const c3 = process.cpuUsage(c2);
      floorCpu += (c3.user + c3.system) / 1000;
      // The durable floor: the batch's HEADs, then the two synchronous commits a batch that
      // changes the catalogue cannot do without (its nodes with their events; their
      // publication mark, whose sequence numbers must survive a crash).
      const t2 = performance.now();
      await Promise.all(keys.slice(b * BATCH, (b + 1) * BATCH).map((Key) => head.send(new HeadObjectCommand({ Bucket: bucket, Key }))));
      await probeQuery('INSERT INTO public.bench_s3_commit_probe (id, v) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET v = excluded.v', [b]);
      // …of which the first alone: what lies inside the handler's duration (the mark goes after it).
      durableOneMs += performance.now() - t2;
      await probeQuery('UPDATE public.bench_s3_commit_probe SET v = v + 1 WHERE id = 1');
      durableMs += performance.now() - t2;
    }
    const handlerS = handlerMs / 1000;
    const floorS = floorMs / 1000;
    const tally = sql.tally();
    const calls = tally.reduce((a, t) => a + t.calls, 0);
    const sqlMs = tally.reduce((a, t) => a + t.ms, 0);
    return { label, records: keys.length, failed, handlerRate: keys.length / handlerS, floorRate: keys.length / floorS, durableRate: keys.length / (durableMs / 1000), durableOneRate: keys.length / (durableOneMs / 1000), perBatchMs: (handlerS * 1000) / batches.length, floorPerBatchMs: (floorS * 1000) / batches.length, cpuPerBatchMs: handlerCpu / batches.length, floorCpuPerBatchMs: floorCpu / batches.length, sqlPerBatch: calls / batches.length, sqlMsPerBatch: sqlMs / batches.length, top: tally.slice(0, Number(process.env.BENCH_S3_EVENTS_SQL_TOP ?? 5)), batches };
  };

  // Warm the container (core, pool, prepared statements) on a batch of its own.
  const warm = await newMount();
  for (let i = 0; i < BATCH; i++) await putRawKey(s3.client, warm.bucket as string, `tenant/warm-${i}`, 'w');
  await throughput('warm-up', warm, Array.from({ length: BATCH }, (_, i) => `tenant/warm-${i}`));

  const own = await newMount();
  const ownKeys: string[] = [];
  for (let i = 0; i < RECORDS; i++) {
    await writer.orchestrator.writeFile(own.id, { path: `own/f ${i}.txt` }, Readable.from([Buffer.from(`own ${i}`)]));
    ownKeys.push(`tenant/own/f ${i}.txt`);
  }
  const outside = await newMount();
  const outsideKeys: string[] = [];
  for (let i = 0; i < RECORDS; i++) {
    await putRawKey(s3.client, outside.bucket as string, `tenant/new/f ${i}.txt`, `new ${i}`);
    outsideKeys.push(`tenant/new/f ${i}.txt`);
  }
  const rows = [await throughput("Filestore's own writes", own, ownKeys)];
  // The same events again, as a redelivery: dropped by their stored sequencers, no HEAD at all.
  rows.push(await throughput('  ...redelivered (dropped)', own, ownKeys, true, rows[0]?.batches));
  const own2 = await newMount();
  for (let i = 0; i < RECORDS; i++) await writer.orchestrator.writeFile(own2.id, { path: `own/f ${i}.txt` }, Readable.from([Buffer.from(`own ${i}`)]));
  rows.push(await throughput("  ...without the Lambda shell", own2, ownKeys, false));
  rows.push(await profiled(process.env.BENCH_S3_EVENTS_PROFILE, () => throughput('new objects outside Filestore', outside, outsideKeys)));

  // Latency through the bridge and the poller.
  const lat = await newMount();
  await writer.pool.query('UPDATE filestore.mounts SET endpoint = $2 WHERE id = $1', [lat.id, proxy.endpoint]);
  const bridge = await startS3Notifications({ proxy, endpoint: s3.endpoint, s3: s3.client, visibilityTimeout: 5 });
  const poller = createSqsPoller({ sqs: bridge.sqs, queueUrl: bridge.queueUrl, queueArn: bridge.queueArn, handler, pollIntervalMs: POLL_MS });
  const sub = new Redis(REDIS_URL);
  const waiting = new Map<string, (t: number) => void>();
  sub.on('message', (_channel: string, message: string) => {
    const e = JSON.parse(message) as { type: string; mountId: string; data: { node?: { path?: string } } };
    if (e.type !== 'filestore.node.reconciled' || e.mountId !== lat.id) return;
    waiting.get(e.data.node?.path ?? '')?.(performance.now());
  });
  await sub.subscribe(EVENTS_CHANNEL);
  poller.start();
  const latencies: number[] = [];
  const raw = testS3Client(proxy.endpoint);
  for (let i = 0; i < WRITES + 10; i++) {
    const path = `lat/w ${i}.txt`;
    const seen = new Promise<number>((resolve) => waiting.set(path, resolve));
    const t0 = performance.now();
    await putRawKey(raw, lat.bucket as string, `tenant/${path}`, `latency ${i}`);
    const t1 = await Promise.race([seen, new Promise<number>((r) => setTimeout(() => r(Number.NaN), 10_000))]);
    waiting.delete(path);
    if (i >= 10) latencies.push(t1 - t0); // the first ten warm the path
  }
  await poller.stop();
  const lost = latencies.filter((l) => Number.isNaN(l)).length;
  const sorted = latencies.filter((l) => !Number.isNaN(l)).sort((a, b) => a - b);

  const f = (n: number, d = 0) => n.toFixed(d);
  console.log(`\nS3-event handler throughput (batches of ${BATCH}, records in parallel, one container, pool 2) vs HEAD alone, same fauxqs, same run`);
  console.log('workload                          records  handler rec/s  HEAD-only rec/s  ratio  HEADs+2 commits rec/s  ratio  HEADs+1 commit rec/s (÷ HEADs)  ms/batch (handler | HEADs)  CPU ms/batch (handler | HEADs)  SQL/batch  SQL ms/batch  failed');
  for (const r of rows) {
    console.log(`${r.label.padEnd(32)}  ${String(r.records).padStart(7)}  ${f(r.handlerRate).padStart(13)}  ${f(r.floorRate).padStart(15)}  ${f(r.handlerRate / r.floorRate, 2).padStart(5)}  ${f(r.durableRate).padStart(21)}  ${f(r.handlerRate / r.durableRate, 2).padStart(5)}  ${`${f(r.durableOneRate)} (${f(r.durableOneRate / r.floorRate, 2)})`.padStart(30)}  ${`${f(r.perBatchMs, 1)} | ${f(r.floorPerBatchMs, 1)}`.padStart(26)}  ${`${f(r.cpuPerBatchMs, 1)} | ${f(r.floorCpuPerBatchMs, 1)}`.padStart(30)}  ${f(r.sqlPerBatch, 1).padStart(9)}  ${f(r.sqlMsPerBatch, 1).padStart(12)}  ${r.failed}`);
    if (process.env.BENCH_S3_EVENTS_SQL_TOP) console.log(`    largest SQL waits per batch: ${r.top.map((t) => `${t.label.slice(0, 60)} ${f(t.calls / (r.records / BATCH), 1)}/batch ${f(t.ms / (r.records / BATCH), 1)} ms`).join('; ')}`);
  }
  console.log(`\nOut-of-band PutObject -> filestore.node.reconciled on Redis via bridge + SQS poller (poll interval ${POLL_MS} ms after an empty receive), ${sorted.length} writes${lost ? `, ${lost} never seen` : ''}`);
  console.log(`p50 ${f(percentile(sorted, 50))} ms  p99 ${f(percentile(sorted, 99))} ms  max ${f(sorted.at(-1) ?? Number.NaN)} ms  |  beyond the poll interval: p50 ${f(percentile(sorted, 50) - POLL_MS)} ms  p99 ${f(percentile(sorted, 99) - POLL_MS)} ms  (target p99 < 1000 ms)`);

  sub.disconnect();
  await probe.query('DROP TABLE IF EXISTS public.bench_s3_commit_probe');
  await probe.end();
  raw.destroy();
  await bridge.stop();
  await closeLambdaCore();
  await writer.close();
  await proxy.stop();
  await s3.stop();
}

/** The handler's invocations (process.hrtime, µs): the part of a profile that is the handler's. */
const handlerWindows: Array<{ startUs: number; endUs: number }> = [];

/** `fn` under the V8 CPU profiler when `file` is set (BENCH_S3_EVENTS_PROFILE: a .cpuprofile for Chrome DevTools). */
async function profiled<T>(file: string | undefined, fn: () => Promise<T>): Promise<T> {
  if (!file) return fn();
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(file, JSON.stringify(profile));
    writeFileSync(`${file}.windows.json`, JSON.stringify(handlerWindows));
    session.disconnect();
  }
}

if (process.argv[2] === FAUXQS_CHILD_FLAG) {
  await runFauxqsChild(process.argv.slice(3));
} else {
  await main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
