/**
 * The S3-event handler reconciles the drifted keys of a batch whose state its look already
 * found (a file created or changed outside Filestore) in one transaction (s3-events/apply.ts):
 * the catalogue, the events and the job rows come out exactly as from one reconciliation per
 * key (detectDrift, then reconcilePath for each, as the handler did before), and the batch
 * takes a fraction of the statements.
 */
import { Readable } from 'node:stream';
import type { SQSEvent } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { detectDrift } from '../shared/reconcile/drift.ts';
import type { JobTarget } from '../shared/reconcile/job-plan.ts';
import { reconcilePath } from '../shared/reconcile/reconcile-path.ts';
import { processS3Events } from '../shared/reconcile/s3-events/process.ts';
import type { Filestore } from '../shared/runtime.ts';
import { sharedS3, stopS3, uniqueKey, wireTestFilestore } from './support/filestore.ts';
import { formEncodeKey } from './support/s3-notifications.ts';
import { putRawKey } from './support/s3.ts';

const NEW = ['n0.txt', 'n 1+.txt', 'n2.txt', 'n3.txt', 'n4.txt', 'n5.txt', 'd/n6.txt', 'd/n7.txt'];
const KEYS = [...NEW, 'upd.txt', 'x/n9.txt']; // changed outside; below a directory the catalogue lacks
const sequencerOf = (i: number) => (0x1000 + i).toString(16).toUpperCase();

describe('S3 events: a batch of drifted keys applied together', () => {
  let core: Filestore;
  let s3: Awaited<ReturnType<typeof sharedS3>>;

  beforeAll(async () => {
    s3 = await sharedS3();
    core = await wireTestFilestore();
  });
  afterAll(async () => {
    await core?.close();
    await stopS3();
  });

  /** A mount in a state of its own: Filestore's own files, then the keys written outside. */
  async function prepared(): Promise<Mount> {
    const bucket = await s3.createBucket();
    const mount = await createMount(core.pool, { key: uniqueKey('s3batch'), kind: 's3', bucket, prefix: 'tenant/', endpoint: s3.endpoint, region: 'us-east-1' });
    await core.orchestrator.writeFile(mount.id, { path: 'd/keep.txt' }, Readable.from([Buffer.from('kept')]));
    await core.orchestrator.writeFile(mount.id, { path: 'upd.txt' }, Readable.from([Buffer.from('before')]));
    for (const k of KEYS) await putRawKey(s3.client, bucket, `tenant/${k}`, `outside ${k}, ${k.length} long`);
    return mount;
  }

  /** One record per key; `reported`: the size and ETag its event carries (absent: none, as in older fixtures). */
  const event = (bucket: string, reported?: ReadonlyMap<string, { size: number; eTag: string }>): SQSEvent => ({
    Records: KEYS.map((k, i) => ({
      messageId: `m-${i}`,
      receiptHandle: `r-${i}`,
      body: JSON.stringify({ Records: [{ eventVersion: '2.1', eventSource: 'aws:s3', eventName: 'ObjectCreated:Put', s3: { bucket: { name: bucket }, object: { key: formEncodeKey(`tenant/${k}`), ...reported?.get(k), sequencer: sequencerOf(i) } } }] }),
      attributes: { ApproximateReceiveCount: '1', SentTimestamp: '0', SenderId: 't', ApproximateFirstReceiveTimestamp: '0' },
      messageAttributes: {},
      md5OfBody: '',
      eventSource: 'aws:sqs',
      eventSourceARN: 'arn:aws:sqs:us-east-1:000000000000:t',
      awsRegion: 'us-east-1',
    })),
  });

  /** What a user can see of a mount: nodes, rollups, snapshots with their job's path, job rows, events (ids and times left out). */
  async function observable(mountId: string) {
    const q = async (sql: string) => (await core.pool.query(sql, [mountId])).rows;
    const nodes = await q(
      `SELECT path, kind, size_bytes, etag, version, consistency_state, sequencer, deleted_at IS NULL AS live,
              last_drift_detected_at IS NULL AS no_drift, last_reconciled_at IS NULL AS not_reconciled
         FROM filestore.nodes WHERE mount_id = $1 ORDER BY path COLLATE "C"`,
    );
    const rollups = await q(
      `SELECT n.path, r.size_bytes + coalesce(d.size, 0) AS size, r.file_count + coalesce(d.files, 0) AS files, r.dir_count + coalesce(d.dirs, 0) AS dirs,
              r.child_count + coalesce(d.children, 0) AS children
         FROM filestore.rollups r JOIN filestore.nodes n ON n.id = r.node_id
         LEFT JOIN (SELECT node_id, sum(size_bytes) AS size, sum(file_count) AS files, sum(dir_count) AS dirs, sum(child_count) AS children
                      FROM filestore.rollup_deltas GROUP BY node_id) d ON d.node_id = r.node_id
        WHERE r.mount_id = $1 ORDER BY n.path COLLATE "C"`,
    );
    const snapshots = await q(
      `SELECT n.path, s.version, j.path AS job_path, s.journal_entry_id IS NULL AS no_journal
         FROM filestore.snapshots s JOIN filestore.nodes n ON n.id = s.node_id LEFT JOIN filestore.reconciliation_jobs j ON j.id = s.reconciliation_job_id
        WHERE n.mount_id = $1 ORDER BY n.path COLLATE "C", s.version`,
    );
    const jobs = await q(
      `SELECT path, reason, status, attempts, options, result, error, coalesced, queue_owed, transport, started_at IS NOT NULL AS started, finished_at IS NOT NULL AS finished
         FROM filestore.reconciliation_jobs WHERE mount_id = $1 ORDER BY path COLLATE "C"`,
    );
    const jobPath = new Map((await q(`SELECT id, path FROM filestore.reconciliation_jobs WHERE mount_id = $1`)).map((r) => [Number(r.id), r.path as string]));
    const events = (await q(`SELECT type, data FROM filestore.outbox WHERE mount_id = $1 ORDER BY id`)).map((r) => {
      const d = r.data as { node?: Record<string, unknown>; path?: string; change?: string; reason?: string; jobId?: number; nodeId?: number | null; observed?: Record<string, unknown> | null };
      const node = d.node ? { path: d.node.path, kind: d.node.kind, sizeBytes: d.node.sizeBytes, etag: d.node.etag, version: d.node.version, consistencyState: d.node.consistencyState, sequencer: d.node.sequencer } : undefined;
      return { type: r.type, path: d.path ?? node?.path, change: d.change, reason: d.reason, job: d.jobId === undefined ? undefined : jobPath.get(d.jobId), tracked: d.nodeId === undefined ? undefined : d.nodeId !== null, node, observedSize: d.observed?.sizeBytes };
    });
    // Events of different paths have no order to keep: each path's own, in order.
    const byPath = new Map<string, unknown[]>();
    for (const e of events) byPath.set(String(e.path), [...(byPath.get(String(e.path)) ?? []), e]);
    return { nodes, rollups, snapshots, jobs, events: [...byPath.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) };
  }

  /** Statements `fn` sends through the core's pool (round trips), and the texts of those that commit. */
  async function statementsOf<T>(fn: () => Promise<T>): Promise<{ out: T; statements: number; commits: string[] }> {
    let statements = 0;
    const commits: string[] = [];
    const counted = new WeakSet<object>();
    const count = (c: { query: (...a: unknown[]) => unknown }) => {
      if (counted.has(c)) return;
      counted.add(c);
      const query = c.query.bind(c);
      c.query = (...a: unknown[]) => {
        statements++;
        const text = typeof a[0] === 'string' ? a[0] : ((a[0] as { text?: string } | undefined)?.text ?? '');
        if (/\bCOMMIT\b/.test(text)) commits.push(text);
        return query(...a);
      };
    };
    core.pool.on('acquire', count as never);
    try {
      const out = await fn();
      return { out, statements, commits };
    } finally {
      core.pool.removeListener('acquire', count as never);
    }
  }

  it("a batch of Filestore's own writes is judged in three statements: mounts with the stored sequencers and the clock; try-locks with the read; checks and sequencers with the COMMIT. Delivered again: one", async () => {
    const bucket = await s3.createBucket();
    const mount = await createMount(core.pool, { key: uniqueKey('s3own'), kind: 's3', bucket, prefix: 'tenant/', endpoint: s3.endpoint, region: 'us-east-1' });
    for (const k of KEYS) await core.orchestrator.writeFile(mount.id, { path: k }, Readable.from([Buffer.from(`own ${k}`)]));
    const before = await observable(mount.id);
    const { out, statements, commits } = await statementsOf(() => processS3Events(core, event(bucket), undefined, { retryDelaysMs: [] }));
    expect(out.batchItemFailures).toEqual([]);
    // Checks and sequencers only, which a crash may take back harmlessly (an older event is
    // judged against storage again): the COMMIT does not wait for the WAL flush.
    expect(commits).toHaveLength(1);
    expect(commits[0]).toMatch(/^SET LOCAL synchronous_commit = off;/);
    const after = await observable(mount.id);
    // Only the sequencers changed: no version, no drift, no job, no event.
    expect(after.nodes).toEqual(before.nodes.map((n) => (KEYS.includes(n.path as string) ? { ...n, sequencer: sequencerOf(KEYS.indexOf(n.path as string)) } : n)));
    expect(after.jobs).toEqual([]);
    expect(after.events).toEqual(before.events);
    const checked = await core.pool.query(`SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND path = ANY($2::text[]) AND consistency_checked_at > created_at`, [mount.id, KEYS]);
    expect(checked.rows[0]?.n).toBe(KEYS.length);
    // Before: ten (a SELECT now() of its own, BEGIN, lock, changedSince, read, touch, sequencers, COMMIT), then five.
    expect(statements).toBe(3);

    // Delivered again: every key dropped by the sequencer its node stored (read with the
    // mounts, before they are known), no look at storage, no transaction.
    const logged: Array<Record<string, unknown>> = [];
    const log = { info: (_m: string, d: Record<string, unknown>) => logged.push(d), warn: () => {} };
    const again = await statementsOf(() => processS3Events(core, event(bucket), undefined, { retryDelaysMs: [], log }));
    expect(again.out.batchItemFailures).toEqual([]);
    expect(logged.map((d) => [d.dropped, d.judged])).toEqual([[KEYS.length, 0]]);
    expect(again.statements).toBe(1);
    expect(await observable(mount.id)).toEqual(after);
  });

  it("events of Filestore's own writes that report the size and ETag the catalogue records need no look at storage: two statements, their sequencers without a flush; any other record is still looked at", async () => {
    const bucket = await s3.createBucket();
    const mount = await createMount(core.pool, { key: uniqueKey('s3rep'), kind: 's3', bucket, prefix: 'tenant/', endpoint: s3.endpoint, region: 'us-east-1' });
    for (const k of KEYS) await core.orchestrator.writeFile(mount.id, { path: k }, Readable.from([Buffer.from(`own ${k}`)]));
    const rows = await core.pool.query<{ path: string; size: string; etag: string }>(`SELECT path, size_bytes::text AS size, etag FROM filestore.nodes WHERE mount_id = $1 AND path = ANY($2::text[]) AND deleted_at IS NULL`, [mount.id, KEYS]);
    const reported = new Map(rows.rows.map((r) => [r.path, { size: Number(r.size), eTag: `"${r.etag}"` }]));
    expect(reported.size).toBe(KEYS.length);
    // Two keys whose events say otherwise: an ETag the catalogue does not hold (the object was
    // overwritten outside with as many bytes), and a node already INCONSISTENT.
    const [overwritten, inconsistent] = ['upd.txt', 'n0.txt'];
    await putRawKey(s3.client, bucket, `tenant/${overwritten}`, `own ${overwritten}`.replace('o', '0'));
    reported.set(overwritten, { size: Number(reported.get(overwritten)?.size), eTag: '0123456789abcdef0123456789abcdef' });
    await core.pool.query(`UPDATE filestore.nodes SET consistency_state = 'INCONSISTENT' WHERE mount_id = $1 AND path = $2`, [mount.id, inconsistent]);
    const before = await observable(mount.id);
    const logged: Array<Record<string, unknown>> = [];
    const log = { info: (_m: string, d: Record<string, unknown>) => logged.push(d), warn: () => {} };

    const own = new Map([...reported].filter(([k]) => k !== overwritten && k !== inconsistent));
    const ownOnly = event(bucket, own);
    const { out, statements, commits } = await statementsOf(() => processS3Events(core, { Records: ownOnly.Records.filter((_, i) => own.has(KEYS[i] as string)) }, undefined, { retryDelaysMs: [], log }));
    expect(out.batchItemFailures).toEqual([]);
    expect(logged.map((d) => [d.recorded, d.judged, d.reconciled])).toEqual([[own.size, 0, 0]]);
    // The mounts with the live nodes; the checks and sequencers with a COMMIT that does not wait for the flush.
    expect(statements).toBe(2);
    expect(commits).toHaveLength(1);
    expect(commits[0]).toMatch(/synchronous_commit = off/);
    const after = await observable(mount.id);
    expect(after.nodes).toEqual(before.nodes.map((n) => (own.has(n.path as string) ? { ...n, sequencer: sequencerOf(KEYS.indexOf(n.path as string)) } : n)));
    expect(after.jobs).toEqual([]);
    expect(after.events).toEqual(before.events);
    // S3's report of a version is not a look at storage: no check time is recorded.
    const checked = await core.pool.query(`SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND path = ANY($2::text[]) AND consistency_checked_at > created_at`, [mount.id, [...own.keys()]]);
    expect(checked.rows[0]?.n).toBe(0);

    // The two others: looked at. The overwrite is drift, reconciled to what storage holds; the
    // INCONSISTENT node gets its reconciliation.
    logged.length = 0;
    const rest = event(bucket, reported);
    const second = await processS3Events(core, { Records: rest.Records.filter((_, i) => [overwritten, inconsistent].includes(KEYS[i] as string)) }, undefined, { retryDelaysMs: [], log });
    expect(second.batchItemFailures).toEqual([]);
    expect(logged.map((d) => [d.recorded, d.judged, d.reconciled])).toEqual([[0, 2, 2]]);
    const now = await observable(mount.id);
    const nodeOf = (p: string) => now.nodes.find((n) => n.path === p);
    expect(nodeOf(overwritten)?.consistency_state).toBe('ACTIVE');
    expect(nodeOf(overwritten)?.etag).not.toBe(before.nodes.find((n) => n.path === overwritten)?.etag);
    expect(nodeOf(inconsistent)?.consistency_state).toBe('ACTIVE');
    const eventsOf = (p: string) => (now.events.find(([path]) => path === p)?.[1] ?? []).map((e) => (e as { type: string }).type);
    expect(eventsOf(overwritten)).toContain('filestore.drift.detected');
  });

  it('a batch of new and changed objects leaves the same catalogue, events and job rows as one reconciliation per key, in far fewer statements', async () => {
    const batched = await prepared();
    const single = await prepared();

    const { out: response, statements: batchStatements } = await statementsOf(() => processS3Events(core, event(batched.bucket as string), undefined, { retryDelaysMs: [] }));
    expect(response.batchItemFailures).toEqual([]);

    // As the handler did before: judge together, then reconcile each drifted key on its own.
    const sequencers = new Map(KEYS.map((k, i) => [k, sequencerOf(i)]));
    const targets: JobTarget[] = [];
    await detectDrift(core, single, { changes: new Map(KEYS.map((k) => [k, 'created' as const])), sequencers }, { reason: 's3_event', skipCoveredByListings: false, dispatch: async (t) => (targets.push(...t), t.length) });
    for (const t of targets) {
      const done = await reconcilePath(core, { mountId: single.id, path: t.path, reason: 's3_event', recursive: t.recursive, hash: false, sequencer: sequencers.get(t.path) }, {}, {});
      expect(done.outcome).toBe('succeeded');
    }

    const got = await observable(batched.id);
    const want = await observable(single.id);
    expect(got).toEqual(want);
    // Every key is catalogued ACTIVE with its event's sequencer, a job row each.
    expect(got.nodes.filter((n) => KEYS.includes(n.path as string)).map((n) => [n.path, n.consistency_state, n.sequencer])).toEqual(
      [...KEYS].sort().map((k) => [k, 'ACTIVE', sequencerOf(KEYS.indexOf(k))]),
    );
    expect(got.jobs.map((j) => j.path)).toEqual([...KEYS].sort());
    // One reconciliation per key took about 21 statements each (over 200 for the batch); the
    // key below an untracked directory still takes one of its own.
    expect(batchStatements).toBeLessThanOrEqual(42);
  });

  it("a failure of the batch's writes undoes them alone: the drift is still recorded and each key is reconciled on its own", async () => {
    const bucket = await s3.createBucket();
    const mount = await createMount(core.pool, { key: uniqueKey('s3undo'), kind: 's3', bucket, prefix: 'tenant/', endpoint: s3.endpoint, region: 'us-east-1' });
    await core.orchestrator.writeFile(mount.id, { path: 'd/keep.txt' }, Readable.from([Buffer.from('kept')]));
    for (const k of NEW) await putRawKey(s3.client, bucket, `tenant/${k}`, `outside ${k}`);
    // A real failure in the database: an insert of several job rows of this mount at once (the
    // batch's; a single reconciliation inserts one) is refused.
    const fn = `filestore.test_refuse_${mount.id.replace(/-/g, '')}`;
    await core.pool.query(`CREATE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN IF (SELECT count(*) FROM new_rows WHERE mount_id = '${mount.id}') > 1 THEN RAISE EXCEPTION 'refused for the test'; END IF; RETURN NULL; END $$`);
    await core.pool.query(`CREATE TRIGGER test_refuse_${mount.id.replace(/-/g, '')} AFTER INSERT ON filestore.reconciliation_jobs REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ${fn}()`);
    try {
      const all = event(bucket);
      const out = await processS3Events(core, { Records: all.Records.slice(0, NEW.length) }, undefined, { retryDelaysMs: [] });
      expect(out.batchItemFailures).toEqual([]);
    } finally {
      await core.pool.query(`DROP TRIGGER test_refuse_${mount.id.replace(/-/g, '')} ON filestore.reconciliation_jobs`);
      await core.pool.query(`DROP FUNCTION ${fn}()`);
    }
    const after = await observable(mount.id);
    expect(after.nodes.filter((n) => NEW.includes(n.path as string)).map((n) => [n.path, n.consistency_state])).toEqual([...NEW].sort().map((k) => [k, 'ACTIVE']));
    expect(after.jobs.map((j) => [j.path, j.status])).toEqual([...NEW].sort().map((k) => [k, 'succeeded']));
    // Per key: its drift event once (committed with the judgement), then its reconciled event.
    for (const [path, events] of after.events) if (NEW.includes(path)) expect((events as Array<{ type: string }>).map((e) => e.type)).toEqual(['filestore.drift.detected', 'filestore.node.reconciled']);
  });

  it('a batch of new objects below known directories is judged and applied in four statements, the bucket checked and the mount recorded healthy with the COMMIT', async () => {
    const bucket = await s3.createBucket();
    const mount = await createMount(core.pool, { key: uniqueKey('s3new'), kind: 's3', bucket, prefix: 'tenant/', endpoint: s3.endpoint, region: 'us-east-1' });
    await core.orchestrator.writeFile(mount.id, { path: 'd/keep.txt' }, Readable.from([Buffer.from('kept')]));
    for (const k of NEW) await putRawKey(s3.client, bucket, `tenant/${k}`, `outside ${k}`);
    const all = event(bucket);
    const { out, statements, commits } = await statementsOf(() => processS3Events(core, { Records: all.Records.slice(0, NEW.length) }, undefined, { retryDelaysMs: [] }));
    expect(out.batchItemFailures).toEqual([]);
    // New nodes and their events: the COMMIT is synchronous (durable before the messages are deleted).
    expect(commits.length).toBeGreaterThan(0);
    for (const c of commits) expect(c).not.toMatch(/synchronous_commit/);
    const after = await observable(mount.id);
    expect(after.nodes.filter((n) => NEW.includes(n.path as string)).map((n) => [n.path, n.consistency_state])).toEqual([...NEW].sort().map((k) => [k, 'ACTIVE']));
    expect(after.jobs.map((j) => [j.path, j.status])).toEqual([...NEW].sort().map((k) => [k, 'succeeded']));
    // Mounts with the stored sequencers and the clock; one transaction: try-locks with the read (the
    // keys and their ancestors), a savepoint with the job rows and the nodes (one statement, at
    // every depth: their parents are known), then drift events, rollups, reconciled events, job
    // rows finished, sequencers, the mount's health (the bucket listed meanwhile) and COMMIT.
    // Before: twenty, two transactions, a statement of its own for each; then eight (mounts and
    // sequencers apart); then seven (job rows, one node insert per depth, the health apart).
    expect(statements).toBe(4);
    const { rows: health } = await core.pool.query<{ health: string; checked: boolean }>('SELECT health, health_checked_at IS NOT NULL AS checked FROM filestore.mounts WHERE id = $1', [mount.id]);
    expect(health).toEqual([{ health: 'healthy', checked: true }]);
  });
});
