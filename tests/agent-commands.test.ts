import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STAGING_DIR } from '../shared/paths.ts';
import { commandQueueName, type CommandMessage, type CommandReply } from '../shared/dispatch/messages.ts';
import { qs } from './support/http.ts';
import { walkDisk } from './support/out-of-band.ts';
import {
  createAgentMount,
  eventPath,
  eventually,
  killAgents,
  parseMetrics,
  spawnAgent,
  startApiProcess,
  startDeployment,
  stopAgent,
  subscribeEvents,
  total,
  uniqueAgentId,
  type AgentMount,
  type AgentProcess,
  type ApiProcess,
  type Deployment,
  type RedisEvents,
} from './support/agent-process.ts';

// A real `filestore agent` process owning a local mount, and an API-only Filestore in this
// process (no agent id: it executes no local mount). Commands sent to the API process run on
// the agent through Redis; file bytes go to the agent's HTTP server by a 307.

const agentId = uniqueAgentId('cmd');
let d: Deployment;
let api: ApiProcess;
let agent: AgentProcess;
let events: RedisEvents;
let m: AgentMount;

const jobsIdle = async () => {
  const { rows } = await d.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND status IN ('queued', 'running')`, [m.mount.id]);
  return rows[0]?.n === 0 ? true : undefined;
};

/**
 * Waits until the agent's watcher has judged every change made before now: an out-of-band
 * sentinel is written and its reconciliation awaited (the watcher judges batches in order),
 * twice, a second apart, so that a path deferred while a command held it (retried after
 * half a second) has been judged too.
 */
async function watcherCaughtUp(name: string): Promise<void> {
  for (const n of [1, 2]) {
    const p = `${name}-${n}.txt`;
    await writeFile(m.abs(p), 'sentinel');
    await events.waitFor((e) => e.mountId === m.mount.id && e.type === 'filestore.node.reconciled' && eventPath(e) === p, `node.reconciled for ${p}`);
    if (n === 1) await new Promise((r) => setTimeout(r, 1_000));
  }
  await eventually(jobsIdle, 'the reconcile jobs of the mount to finish', 45_000, agent);
}

beforeAll(async () => {
  d = await startDeployment();
  m = await createAgentMount(d, agentId);
  events = await subscribeEvents(() => [m.mount.id]);
  api = await startApiProcess(d);
  agent = spawnAgent(d, agentId);
  await agent.ready;
  await eventually(jobsIdle, 'the catch-up rescan at start', 45_000, agent);
});

afterAll(async () => {
  if (agent) await stopAgent(agent, 'SIGTERM', 10_000).catch(() => {});
  await killAgents();
  await events?.close();
  await api?.close();
  await m?.cleanup();
  await d?.close();
});

it('/healthz answers, and /readyz reports PostgreSQL, Redis and the agent ready', async () => {
  const health = await agent.call('GET', '/healthz', { token: null });
  expect(health.status).toBe(200);
  expect(await health.json()).toEqual({ status: 'ok' });
  const ready = await agent.call('GET', '/readyz', { token: null });
  expect(ready.status).toBe(200);
  expect(await ready.json()).toEqual({ status: 'ok', checks: { postgres: 'ok', redis: 'ok', agent: 'ok' } });
});

describe('commands for the agent’s mount sent to an API-only process', () => {
  it('mkdir, PUT (the typed client follows the 307), move and delete run on the agent via Redis and answer with the node', async () => {
    // The API process does not touch the mount's bytes: it redirects them to the agent.
    const redirect = await api.call('PUT', `/v1/files?${qs({ mountId: m.mount.key, path: 'docs/a.txt' })}`, { body: 'not read here' });
    expect(redirect.status).toBe(307);
    expect(redirect.headers.get('x-filestore-agent')).toBe(agentId);
    expect(redirect.headers.get('location')).toBe(`${agent.url}/v1/files?${new URLSearchParams({ mountId: m.mount.key, path: 'docs/a.txt' }).toString()}`);
    await redirect.body?.cancel();

    const c = api.client;
    const mk = await c.mkdir({ mountId: m.mount.key, path: 'docs/inner', parents: true });
    expect(mk.node).toMatchObject({ path: 'docs/inner', kind: 'directory', consistencyState: 'ACTIVE' });
    expect((await stat(m.abs('docs/inner'))).isDirectory()).toBe(true);

    const put = await c.putFile({ mountId: m.mount.key, path: 'docs/a.txt', body: Buffer.from('hello agent') });
    expect(put.node).toMatchObject({ path: 'docs/a.txt', kind: 'file', sizeBytes: 11, version: 1 });
    expect(await readFile(m.abs('docs/a.txt'), 'utf8')).toBe('hello agent');

    const moved = await c.move({ mountId: m.mount.key, path: 'docs/a.txt', targetPath: 'docs/inner/b.txt' });
    expect(moved.node).toMatchObject({ id: put.node.id, path: 'docs/inner/b.txt' });
    expect(await readFile(m.abs('docs/inner/b.txt'), 'utf8')).toBe('hello agent');
    await expect(stat(m.abs('docs/a.txt'))).rejects.toThrow();

    const deleted = await c.delete({ mountId: m.mount.key, path: 'docs', recursive: true });
    expect(deleted.node).toMatchObject({ path: 'docs' });
    expect(deleted.node.deletedAt).not.toBeNull();
    await expect(stat(m.abs('docs'))).rejects.toThrow();

    // mkdir, move and delete travelled through the agent's command queue and came back as its
    // replies (the PUT went to the agent's HTTP server).
    const connection = new Redis(d.redisUrl, { maxRetriesPerRequest: null });
    // Under the catalogue's prefix, which the agent process derived from the same database.
    const queue = new Queue<CommandMessage, CommandReply>(commandQueueName(agentId), { connection, prefix: api.core.queuePrefix });
    try {
      const jobs = await queue.getJobs(['completed']);
      const replied = jobs.map((j) => j.returnvalue).filter((r): r is Extract<CommandReply, { ok: true }> => r?.ok === true);
      const ids = replied.map((r) => r.result.journalEntryId);
      for (const r of [mk, moved, deleted]) expect(ids).toContain(r.journalEntryId);
      expect(jobs.find((j) => j.returnvalue?.ok && j.returnvalue.result.journalEntryId === mk.journalEntryId)?.data).toMatchObject({ command: 'mkdir', mountId: m.mount.id });
    } finally {
      await queue.close();
      await connection.quit();
    }
    const journal = (await (await api.call('GET', `/v1/journal?${qs({ mountId: m.mount.id, limit: 100 })}`)).json()) as { items: Array<{ id: number; command: string; status: string; principal: string }> };
    const byId = new Map(journal.items.map((e) => [e.id, e]));
    for (const [r, command] of [[mk, 'mkdir'], [put, 'writeFile'], [moved, 'move'], [deleted, 'delete']] as const) {
      expect(byId.get(r.journalEntryId)).toMatchObject({ command, status: 'succeeded', principal: 'test-admin' });
    }
  });

  it("errors from the agent come back with the agent's code", async () => {
    const e = await api.client.mkdir({ mountId: m.mount.key, path: 'no/parent' }).catch((err: unknown) => err);
    expect(e).toMatchObject({ code: 'NOT_FOUND', status: 404 });
  });
});

it('a second agent started with the id of the running one exits 1 with AGENT_ID_IN_USE naming the running one; that one goes on running commands', { timeout: 60_000 }, async () => {
  const twin = spawnAgent(d, agentId, { FILESTORE_ENABLE_WATCHERS: 'false' });
  const how = await twin.exited;
  expect(how, twin.tail()).toEqual({ code: 1, signal: null });
  expect(twin.tail()).toMatch(/AGENT_ID_IN_USE/);
  expect(twin.tail()).toContain(agent.url);
  const { rows } = await d.pool.query<{ url: string; stopped: boolean }>('SELECT url, stopped_at IS NOT NULL AS stopped FROM filestore.agents WHERE id = $1', [agentId]);
  expect(rows).toEqual([{ url: agent.url, stopped: false }]);
  const mk = await api.client.mkdir({ mountId: m.mount.key, path: 'after-twin' });
  expect(mk.node).toMatchObject({ path: 'after-twin', kind: 'directory' });
  expect((await stat(m.abs('after-twin'))).isDirectory()).toBe(true);
  await api.client.delete({ mountId: m.mount.key, path: 'after-twin' });
});

it("the agent's own writes cause no drift: no drift.detected for them, no INCONSISTENT node, and catalogue and disk agree", async () => {
  const c = api.client;
  const mountId = m.mount.key;
  const before = (await d.pool.query<{ id: number | null }>('SELECT max(id)::int AS id FROM filestore.outbox')).rows[0]?.id ?? 0;
  await c.mkdir({ mountId, path: 'own/a/b', parents: true });
  await c.putFile({ mountId, path: 'own/a/one.txt', body: Buffer.from('one') });
  await c.putFile({ mountId, path: 'own/a/one.txt', body: Buffer.from('one, overwritten and longer') });
  await c.putFile({ mountId, path: 'own/a/b/two.txt', body: Buffer.from('two') });
  await c.putFile({ mountId, path: 'own/new-parents/deep/three.txt', body: Buffer.from('three') });
  await c.copy({ mountId, path: 'own/a', targetPath: 'own/copy' });
  await c.move({ mountId, path: 'own/copy/one.txt', targetPath: 'own/moved.txt' });
  await c.move({ mountId, path: 'own/a/b', targetPath: 'own/b-moved' });
  await c.delete({ mountId, path: 'own/copy', recursive: true });
  await c.delete({ mountId, path: 'own/new-parents/deep/three.txt' });

  await watcherCaughtUp('own-sentinel');

  const { rows: drift } = await d.pool.query<{ path: string }>(
    `SELECT coalesce(data->>'path', data->'node'->>'path') AS path FROM filestore.outbox WHERE mount_id = $1 AND type = 'filestore.drift.detected' AND id > $2`,
    [m.mount.id, before],
  );
  expect(drift.map((r) => r.path).filter((p) => !p.startsWith('own-sentinel'))).toEqual([]);
  expect(events.of(m.mount.id, 'filestore.drift.detected').filter((e) => eventPath(e)?.startsWith('own/') || eventPath(e) === 'own')).toEqual([]);
  const { rows: off } = await d.pool.query<{ path: string; state: string }>(
    `SELECT path, consistency_state AS state FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND consistency_state <> 'ACTIVE'`,
    [m.mount.id],
  );
  expect(off).toEqual([]);
  // The catalogue's live nodes are exactly what is on disk (the staging area aside), kinds and sizes included.
  const { rows: nodes } = await d.pool.query<{ path: string; kind: string; size: number }>(
    `SELECT path, kind, size_bytes::int AS size FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND (path = 'own' OR path LIKE 'own/%') ORDER BY path COLLATE "C"`,
    [m.mount.id],
  );
  const disk = (await walkDisk(m.root)).filter((e) => e.path === 'own' || e.path.startsWith('own/'));
  expect(nodes.map((n) => [n.path, n.kind, n.kind === 'file' ? n.size : 0])).toEqual(disk.map((e) => [e.path, e.kind, e.kind === 'file' ? e.size : 0]));
  expect(disk.map((e) => e.path)).toEqual([
    'own',
    'own/a',
    'own/a/one.txt',
    'own/b-moved',
    'own/b-moved/two.txt',
    'own/moved.txt',
    'own/new-parents',
    'own/new-parents/deep',
  ]);
  expect((await d.pool.query(`SELECT 1 FROM filestore.nodes WHERE mount_id = $1 AND path LIKE $2`, [m.mount.id, `${STAGING_DIR}%`])).rowCount).toBe(0);
});

const SPEC_METRICS = [
  'filestore_executor_duration_seconds',
  'filestore_executor_operations_total',
  'filestore_executor_bytes_total',
  'filestore_watcher_events_total',
  'filestore_drift_detected_total',
  'filestore_reconcile_backlog',
  'filestore_reconcile_jobs_total',
  'filestore_reconcile_duration_seconds',
  'filestore_node_transitions_total',
  'filestore_outbox_lag_seconds',
];

it('/metrics exposes the SPEC §7 metrics, and their values move with commands and drift', async () => {
  const scrape = async () => {
    const res = await agent.call('GET', '/metrics', { token: null });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    return parseMetrics(await res.text());
  };
  const first = await scrape();
  for (const name of SPEC_METRICS) expect([...first.names]).toContain(name);

  const bytes = randomBytes(64 * 1024);
  await api.client.putFile({ mountId: m.mount.key, path: 'metrics/data.bin', body: bytes });
  const got = await api.client.getFile({ mountId: m.mount.key, path: 'metrics/data.bin' });
  expect(Buffer.concat(await got.body.toArray()).equals(bytes)).toBe(true);
  // Drift: the watcher sees it, marks the node INCONSISTENT, a job reconciles it.
  const node = await m.node('metrics/data.bin');
  await writeFile(m.abs('metrics/data.bin'), 'changed outside Filestore');
  await events.waitFor((e) => e.type === 'filestore.node.reconciled' && (e.data.node as { id?: number }).id === node?.id, 'node.reconciled for metrics/data.bin');
  await eventually(jobsIdle, 'the reconcile job to finish', 45_000, agent);

  const second = await scrape();
  const moved = (name: string, labels = ''): [number, number] => [total(first.samples, name, labels), total(second.samples, name, labels)];
  const grew = (name: string, labels = '', by = 1) => {
    const [a, b] = moved(name, labels);
    expect(b - a, `${name}{${labels}} from ${a} to ${b}`).toBeGreaterThanOrEqual(by);
  };
  grew('filestore_executor_operations_total', 'operation="writeFile",outcome="ok"');
  grew('filestore_executor_duration_seconds_count', 'operation="writeFile"');
  grew('filestore_executor_bytes_total', 'operation="writeFile"', bytes.length);
  grew('filestore_executor_bytes_total', 'operation="read"', bytes.length);
  grew('filestore_watcher_events_total', `mount="${m.mount.key}"`);
  grew('filestore_drift_detected_total', `mount="${m.mount.key}"`);
  grew('filestore_node_transitions_total', 'from="ACTIVE",to="INCONSISTENT"');
  grew('filestore_reconcile_jobs_total', 'reason="drift",outcome="succeeded"');
  grew('filestore_reconcile_duration_seconds_count', 'backend="local"');
  // The gauges are there with a value (they move with load, not with every change).
  expect(second.samples.get('filestore_reconcile_backlog{queue="filestore-reconcile"}')).toBeGreaterThanOrEqual(0);
  // The agent's own queue has its own series (issue 16 item 9; it used to be added into the shared one's).
  expect(second.samples.get(`filestore_reconcile_backlog{queue="filestore-reconcile-${agentId}"}`)).toBeGreaterThanOrEqual(0);
  expect(second.samples.get('filestore_outbox_lag_seconds')).toBeGreaterThanOrEqual(0);
});

it('POST /v1/reconcile on the API process is run by the agent: a hashing audit finds a change the watcher cannot see (same size, same mtime)', async () => {
  const put = await api.client.putFile({ mountId: m.mount.key, path: 'hashed/same-size.txt', body: Buffer.from('yyyy') });
  const file = m.abs('hashed/same-size.txt');
  const before = await stat(file);
  await writeFile(file, 'zzzz');
  await utimes(file, before.atime, before.mtime);
  await watcherCaughtUp('hash-sentinel');
  // The watcher saw the write, but the file looks the same to a stat: no drift.
  expect(await m.node('hashed/same-size.txt')).toMatchObject({ version: put.node.version, sha256: put.node.sha256, consistencyState: 'ACTIVE' });

  const job = await api.client.reconcile({ mountId: m.mount.key, path: 'hashed', recursive: true, hash: true });
  expect(job).toMatchObject({ status: 'queued', reason: 'manual' });
  const done = await eventually(async () => {
    const j = await api.client.getJob(job.id);
    return j.status === 'succeeded' || j.status === 'failed' ? j : undefined;
  }, 'the reconcile job to finish', 45_000, agent);
  expect(done).toMatchObject({ status: 'succeeded', result: { updated: 1 } });
  const after = await m.node('hashed/same-size.txt');
  expect(after).toMatchObject({ id: put.node.id, version: put.node.version + 1, consistencyState: 'ACTIVE' });
  expect(after?.sha256).not.toBe(put.node.sha256);
});

// Every agent consumes the jobs of its own local mounts (filestore-reconcile-<agentId>): an
// agent never takes another agent's (it would find no disk there and spend an attempt).
it("reconcile jobs of an agent's local mount run on that agent, the first time, even while it is busy and another agent is idle", { timeout: 60_000 }, async () => {
  const otherId = uniqueAgentId('other');
  const t = await createAgentMount(d, otherId);
  const other = spawnAgent(d, otherId, { FILESTORE_ENABLE_WATCHERS: 'false' });
  try {
    await other.ready;
    await eventually(() => jobsIdle(), 'the first agent to be idle', 45_000, agent);
    for (let i = 0; i < 12; i++) await mkdir(t.abs(`p${i}`));
    // The owner is busy (paused): the jobs of its mount wait for it; the first agent, idle, takes none.
    other.child.kill('SIGSTOP');
    const jobs: Array<{ id: number }> = [];
    for (let i = 0; i < 12; i++) jobs.push(await api.client.reconcile({ mountId: t.mount.key, path: `p${i}`, recursive: true }));
    // A job of the first agent's own mount, requested after them: once it is done, the first
    // agent has had its chance to take them (on one shared FIFO queue it took them first).
    const behind = await api.client.reconcile({ mountId: m.mount.key, path: 'own', recursive: false });
    await eventually(async () => ((await api.client.getJob(behind.id)).status === 'succeeded' ? true : undefined), 'the first agent’s own job', 45_000, agent);
    other.child.kill('SIGCONT');
    // Each job's first attempt is over: it succeeded, or it failed and waits for a retry.
    const rows = await eventually(async () => {
      const { rows: r } = await d.pool.query<{ id: number; status: string; attempts: number; error: { message: string } | null }>(
        'SELECT id, status, attempts, error FROM filestore.reconciliation_jobs WHERE id = ANY($1::bigint[]) ORDER BY id',
        [jobs.map((j) => j.id)],
      );
      return r.every((j) => j.status === 'succeeded' || j.error !== null) ? r : undefined;
    }, 'the first attempt of every job', 45_000, other);
    expect(rows.filter((j) => j.status !== 'succeeded' || j.attempts !== 1).map((j) => j.error?.message ?? j.status)).toEqual([]);
  } finally {
    other.child.kill('SIGCONT');
    await stopAgent(other, 'SIGTERM', 10_000);
    await t.cleanup();
  }
});

it('SIGTERM: an upload in flight completes, the agent stops taking commands (503 AGENT_UNAVAILABLE) and exits 0', { timeout: 60_000 }, async () => {
  let release = () => {};
  const released = new Promise<void>((r) => (release = r));
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(new Uint8Array(Buffer.from('first half, ')));
      await released;
      controller.enqueue(new Uint8Array(Buffer.from('second half')));
      controller.close();
    },
  });
  const upload = agent.call('PUT', `/v1/files?${qs({ mountId: m.mount.key, path: 'drain/upload.txt' })}`, { body: body as unknown as BodyInit });
  upload.catch(() => {}); // awaited below; a cut connection fails the test there
  // The write is under way: journaled as pending, its first bytes in the staging area.
  await eventually(async () => {
    const { rows } = await d.pool.query(`SELECT 1 FROM filestore.journal_entries WHERE mount_id = $1 AND command = 'writeFile' AND status = 'pending' AND request->>'path' = 'drain/upload.txt'`, [m.mount.id]);
    return rows.length > 0 ? true : undefined;
  }, 'the upload to be under way', 30_000, agent);

  agent.child.kill('SIGTERM');
  // It deregisters (API processes stop dispatching to it), then waits for its work: the
  // upload holds its HTTP server open (for at most 5 s: the agent's bound on draining requests).
  await eventually(async () => {
    const { rows } = await d.pool.query<{ stopped: boolean }>('SELECT stopped_at IS NOT NULL AS stopped FROM filestore.agents WHERE id = $1', [agentId]);
    return rows[0]?.stopped ? true : undefined;
  }, 'the agent to mark itself stopped', 30_000, agent);
  const refused = await api.call('POST', '/v1/commands/mkdir', { json: { mountId: m.mount.key, path: 'after-stop' } });
  expect(refused.status).toBe(503);
  expect(await refused.json()).toMatchObject({ error: { code: 'AGENT_UNAVAILABLE', details: { agentId } } });
  expect(agent.child.exitCode).toBeNull();

  release();
  const res = await upload;
  const text = await res.text();
  expect(res.status, text).toBe(200);
  expect(JSON.parse(text)).toMatchObject({ node: { path: 'drain/upload.txt', sizeBytes: 23 } });
  expect(await agent.exited).toEqual({ code: 0, signal: null });
  expect(await readFile(m.abs('drain/upload.txt'), 'utf8')).toBe('first half, second half');
  expect(await m.node('drain/upload.txt')).toMatchObject({ sizeBytes: 23, consistencyState: 'ACTIVE' });
  expect((await d.pool.query(`SELECT status FROM filestore.journal_entries WHERE mount_id = $1 AND request->>'path' = 'drain/upload.txt'`, [m.mount.id])).rows).toEqual([{ status: 'succeeded' }]);
  await expect(stat(m.abs('after-stop'))).rejects.toThrow();
});

it('SIGTERM while the agent is still starting: it finishes starting, then deregisters and exits 0', { timeout: 60_000 }, async () => {
  // A second agent whose watcher has a tree to crawl at start: the signal lands in between.
  const lateId = uniqueAgentId('starting');
  const t = await createAgentMount(d, lateId);
  try {
    for (let dir = 0; dir < 5; dir++) {
      mkdirSync(t.abs(`d${dir}`));
      for (let i = 0; i < 1_000; i++) writeFileSync(t.abs(`d${dir}/f${i}`), 'x');
    }
    const late = spawnAgent(d, lateId);
    // Logged right after it registered and started taking commands, before its watchers run.
    await late.line(/commands on filestore-commands-/);
    late.child.kill('SIGTERM');
    expect(await late.exited).toEqual({ code: 0, signal: null });
    const lines = late.tail(100).split('\n');
    const signalled = lines.findIndex((l) => /SIGTERM, finishing running work/.test(l));
    const started = lines.findIndex((l) => l.startsWith(`filestore agent ${lateId} at `));
    expect(signalled, late.tail()).toBeGreaterThanOrEqual(0);
    expect(started, late.tail()).toBeGreaterThan(signalled);
    // Deregistered: API processes do not dispatch to it.
    const { rows } = await d.pool.query<{ stopped: boolean }>('SELECT stopped_at IS NOT NULL AS stopped FROM filestore.agents WHERE id = $1', [lateId]);
    expect(rows).toEqual([{ stopped: true }]);
    const refused = await api.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'x' } });
    expect(refused.status).toBe(503);
  } finally {
    await t.cleanup();
  }
});

it('with watchers off, the audits it schedules (FILESTORE_AUDIT_CRON) catalogue out-of-band changes in its mounts, and only in its mounts', { timeout: 60_000 }, async () => {
  const auditorId = uniqueAgentId('auditor');
  const own = await createAgentMount(d, auditorId);
  try {
    const mark = (await d.pool.query<{ id: number | null }>('SELECT max(id)::int AS id FROM filestore.reconciliation_jobs')).rows[0]?.id ?? 0;
    const auditor = spawnAgent(d, auditorId, { FILESTORE_ENABLE_WATCHERS: 'false', FILESTORE_AUDIT_CRON: '*/2 * * * * *' });
    await auditor.ready;
    await auditor.line(new RegExp(`^filestore agent ${auditorId} at .*watchers off, audits at "\\*/2 \\* \\* \\* \\* \\*"`));
    const audits = async (mountId: string) =>
      (await d.pool.query<{ status: string }>(`SELECT status FROM filestore.reconciliation_jobs WHERE reason = 'audit' AND mount_id = $1 AND id > $2 ORDER BY id`, [mountId, mark])).rows;
    await mkdir(own.abs('late'));
    await writeFile(own.abs('late/found.txt'), 'found by an audit');
    const node = await eventually(async () => {
      const n = await own.node('late/found.txt');
      return n?.consistencyState === 'ACTIVE' ? n : undefined;
    }, 'late/found.txt catalogued by a scheduled audit', 45_000, auditor);
    expect(node).toMatchObject({ kind: 'file', sizeBytes: 17 });
    // Audits of its mount keep coming, and succeed; the other agent's mount gets none from it.
    await eventually(async () => ((await audits(own.mount.id)).filter((j) => j.status === 'succeeded').length >= 3 ? true : undefined), 'three scheduled audits', 45_000, auditor);
    expect((await audits(own.mount.id)).filter((j) => j.status === 'failed')).toEqual([]);
    expect(await audits(m.mount.id)).toEqual([]);
    expect(await stopAgent(auditor)).toEqual({ code: 0, signal: null });
  } finally {
    await own.cleanup();
  }
});
