import { randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandQueueName, type CommandMessage } from '../shared/dispatch/messages.ts';
import { STAGING_DIR } from '../shared/paths.ts';
import { qs } from './support/http.ts';
import { walkDisk } from './support/out-of-band.ts';
import {
  awaitSessionsGone,
  createAgentMount,
  eventually,
  killAgents,
  spawnAgent,
  startApiProcess,
  startDeployment,
  stopAgent,
  uniqueAgentId,
  type AgentMount,
  type AgentProcess,
  type ApiProcess,
  type Deployment,
} from './support/agent-process.ts';

// A real `filestore agent` process killed with SIGKILL in the middle of its work, then
// started again with the same agent id: what it left pending is resolved, and catalogue and
// disk agree.

const agentId = uniqueAgentId('crash');
let d: Deployment;
let api: ApiProcess;
let agent: AgentProcess;
let m: AgentMount;

interface Entry {
  id: number;
  command: string;
  status: string;
  recovered: boolean;
  error: { code: string } | null;
  idempotency_key: string | null;
}
const entries = async (where: string, values: unknown[]) =>
  (await d.pool.query<Entry>(`SELECT id, command, status, recovered, error, idempotency_key FROM filestore.journal_entries WHERE mount_id = $1 AND ${where} ORDER BY id`, [m.mount.id, ...values])).rows;

/** SIGKILL, then waits until PostgreSQL has ended its sessions (they hold the locks that mark its entries as owned). */
async function kill(a: AgentProcess): Promise<void> {
  a.child.kill('SIGKILL');
  expect(await a.exited).toEqual({ code: null, signal: 'SIGKILL' });
  await awaitSessionsGone(d.pool, a.appName);
}

/**
 * No reconcile job of the mount is queued or running. (A job the killed agent was running
 * stays `running` until BullMQ finds it stalled, lockDuration = 30 s later, and hands it to
 * the restarted agent: the tests kill the agent only while no job runs.)
 */
const jobsIdle = async () => {
  const { rows } = await d.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND status IN ('queued', 'running')`, [m.mount.id]);
  return rows[0]?.n === 0 ? true : undefined;
};

async function restart(): Promise<AgentProcess> {
  agent = spawnAgent(d, agentId);
  await agent.ready;
  return agent;
}

/** The catalogue's live nodes of the mount are exactly what its disk holds (kinds, sizes), all ACTIVE. */
async function catalogueMatchesDisk(): Promise<void> {
  const { rows } = await d.pool.query<{ path: string; kind: string; size: number; state: string }>(
    `SELECT path, kind, size_bytes::int AS size, consistency_state AS state FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL ORDER BY path COLLATE "C"`,
    [m.mount.id],
  );
  const disk = await walkDisk(m.root);
  expect(rows.map((n) => [n.path, n.kind, n.kind === 'file' ? n.size : 0, n.state])).toEqual(disk.map((e) => [e.path, e.kind, e.kind === 'file' ? e.size : 0, 'ACTIVE']));
}

beforeAll(async () => {
  d = await startDeployment();
  m = await createAgentMount(d, agentId);
  api = await startApiProcess(d, { commandWaitMs: 30_000 });
  agent = spawnAgent(d, agentId);
  await agent.ready;
  await eventually(jobsIdle, 'the catch-up rescan at start', 45_000, agent);
});

afterAll(async () => {
  if (agent) await stopAgent(agent, 'SIGTERM', 10_000).catch(() => {});
  await killAgents();
  await api?.close();
  await m?.cleanup();
  await d?.close();
});

it('an agent killed while an upload over an existing file streams: on restart the entry fails as INTERRUPTED, the old file and its node are intact, the staged bytes are gone', { timeout: 80_000 }, async () => {
  const original = await api.client.putFile({ mountId: m.mount.key, path: 'crash/data.txt', body: Buffer.from('the original content') });

  let stopUpload = () => {};
  const stopped = new Promise<void>((r) => (stopUpload = r));
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(new Uint8Array(Buffer.alloc(256 * 1024, 'x')));
      await stopped; // the rest never comes
      controller.close();
    },
  });
  const upload = agent.call('PUT', `/v1/files?${qs({ mountId: m.mount.key, path: 'crash/data.txt' })}`, { body: body as unknown as BodyInit });
  upload.catch(() => {}); // the agent dies under it
  // Under way: journaled as pending, bytes arriving in the staging area.
  const [entry] = await eventually(async () => {
    const pending = await entries(`command = 'writeFile' AND status = 'pending'`, []);
    return pending.length > 0 ? pending : undefined;
  }, 'the upload to be journaled', 30_000, agent);
  const staged = async () => (await readdir(path.join(m.root, STAGING_DIR)).catch(() => [] as string[])).filter((n) => n.startsWith(`j${entry?.id}-`));
  await eventually(async () => ((await staged()).length > 0 ? true : undefined), 'bytes in the staging area', 30_000, agent);

  await kill(agent);
  stopUpload();
  expect((await upload.catch((e: unknown) => e)) instanceof Error).toBe(true);
  // Nobody finished it: still pending, the old bytes in place.
  expect(await entries('id = $2', [entry?.id])).toMatchObject([{ status: 'pending' }]);
  expect(await readFile(m.abs('crash/data.txt'), 'utf8')).toBe('the original content');

  await restart();
  // The recovery sweep at start resolves it from what storage shows: the new bytes never
  // replaced the file, so the command had no effect.
  const [resolved] = await eventually(async () => {
    const rows = await entries(`id = $2 AND status <> 'pending'`, [entry?.id]);
    return rows.length > 0 ? rows : undefined;
  }, 'the pending entry to be resolved', 45_000, agent);
  expect(resolved).toMatchObject({ command: 'writeFile', status: 'failed', recovered: true, error: { code: 'INTERRUPTED' } });
  expect(await staged()).toEqual([]);
  expect(await readFile(m.abs('crash/data.txt'), 'utf8')).toBe('the original content');
  expect(await m.node('crash/data.txt')).toMatchObject({ id: original.node.id, version: original.node.version, sizeBytes: 20, sha256: original.node.sha256, consistencyState: 'ACTIVE' });
  // Readable through the API process (307 to the restarted agent), and catalogue and disk agree.
  const got = await api.client.getFile({ mountId: m.mount.key, path: 'crash/data.txt' });
  expect(Buffer.concat(await got.body.toArray()).toString()).toBe('the original content');
  await eventually(jobsIdle, 'the catch-up rescan after the restart', 45_000, agent);
  await catalogueMatchesDisk();
});

const TREE_FILES = 3_000;

describe('an agent killed in the middle of a tree copy that an API process dispatched to it', () => {
  let staging: string[] = [];

  it('on restart the entry is resolved (INTERRUPTED: the copy never reached its target), and the caller retrying with its Idempotency-Key gets the copy', { timeout: 80_000 }, async () => {
    // A tree catalogued by the agent's watcher: 3 directories of 1,000 files.
    for (let i = 0; i < TREE_FILES; i++) {
      const dir = m.abs(`src/d${i % 3}`);
      if (i < 3) mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, `f-${String(i).padStart(4, '0')}.txt`), `file ${i}`);
    }
    await eventually(async () => {
      const { rows } = await d.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'file' AND consistency_state = 'ACTIVE' AND path LIKE 'src/%'`, [m.mount.id]);
      return rows[0]?.n === TREE_FILES ? true : undefined;
    }, 'the source tree catalogued', 45_000, agent);
    await eventually(jobsIdle, 'the reconcile jobs of the source tree', 45_000, agent);

    const key = randomUUID();
    const send = (wait: number) =>
      api.call('POST', '/v1/commands/copy', { json: { mountId: m.mount.key, path: 'src', targetPath: 'dst' }, headers: { 'idempotency-key': key, prefer: `wait=${wait}` } });
    const first = send(2);
    // The copy is being built in the staging area (it is renamed into place once complete).
    const building = async () => (await readdir(path.join(m.root, STAGING_DIR)).catch(() => [] as string[])).filter((n) => n.startsWith('copy.'));
    await eventually(async () => ((await building()).length > 0 ? true : undefined), 'the copy to be under way', 30_000, agent);
    await kill(agent);
    const [entry] = await entries(`command = 'copy'`, []);
    expect(entry).toMatchObject({ status: 'pending', idempotency_key: key });
    await expect(stat(m.abs('dst'))).rejects.toThrow();
    // The caller waited 2 s: 202, the command is accepted and owed.
    const accepted = await first;
    expect(accepted.status, await accepted.clone().text()).toBe(202);
    expect(await accepted.json()).toMatchObject({ status: 'accepted', agentId, idempotencyKey: key, journalEntry: { id: entry?.id, status: 'pending' } });
    staging = await building();
    expect(staging.length).toBeGreaterThan(0);

    await restart();
    const [resolved] = await eventually(async () => {
      const rows = await entries(`id = $2 AND status <> 'pending'`, [entry?.id]);
      return rows.length > 0 ? rows : undefined;
    }, 'the pending copy to be resolved', 45_000, agent);
    expect(resolved).toMatchObject({ status: 'failed', recovered: true, error: { code: 'INTERRUPTED' } });

    // Sending it again with the same key: an interrupted command runs again, once.
    let result: { journalEntryId: number; node: { path: string; kind: string } } | undefined;
    for (let attempt = 0; !result; attempt++) {
      const res = await send(20);
      const text = await res.text();
      if (res.status === 200) result = JSON.parse(text) as typeof result;
      else expect([res.status, attempt], text).toEqual([202, attempt]);
    }
    expect(result?.node).toMatchObject({ path: 'dst', kind: 'directory' });
    expect(await entries(`command = 'copy'`, [])).toMatchObject([
      { id: entry?.id, status: 'failed', recovered: true },
      { id: result?.journalEntryId, status: 'succeeded', idempotency_key: key },
    ]);
    const copied = (await walkDisk(m.root)).filter((e) => e.kind === 'file' && e.path.startsWith('dst/'));
    expect(copied).toHaveLength(TREE_FILES);
    await eventually(jobsIdle, 'the reconcile jobs after the restart', 45_000, agent);
    await catalogueMatchesDisk();
  });

  // A tree copy is built in `.filestore-staging/copy.<random>`, a name no journal entry holds:
  // the restarted agent removes such leftovers of the earlier run before taking commands.
  it('the partial tree of the interrupted copy does not stay in the staging area', async () => {
    const left = (await readdir(path.join(m.root, STAGING_DIR))).filter((n) => staging.includes(n));
    expect(left).toEqual([]);
  });
});

it('a command sent to the API process while the agent is dead waits in its queue and runs once, when the agent is back', { timeout: 80_000 }, async () => {
  await kill(agent);
  // Its heartbeat is recent (it did not say it stopped): the API process still dispatches to it.
  const key = randomUUID();
  const send = () => api.call('POST', '/v1/commands/mkdir', { json: { mountId: m.mount.key, path: 'while-down/dir', parents: true }, headers: { 'idempotency-key': key } });
  const first = send();
  // Queued on filestore-commands-<agentId>, not run: nothing on disk, nothing journaled.
  const connection = new Redis(d.redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue<CommandMessage>(commandQueueName(agentId), { connection, prefix: api.core.queuePrefix });
  try {
    await eventually(async () => ((await queue.getJobs(['wait'])).some((j) => j.data.context.idempotencyKey === key) ? true : undefined), 'the command to be queued for the agent');
  } finally {
    await queue.close();
    await connection.quit();
  }
  await expect(stat(m.abs('while-down'))).rejects.toThrow();
  expect(await entries('idempotency_key = $2', [key])).toEqual([]);

  await restart();
  // The caller gets the result (or 202 if the restart outlasted its wait, then the result by its key).
  let res = await first;
  let result: { journalEntryId: number; node: { path: string; kind: string } } | undefined;
  while (!result) {
    const text = await res.text();
    if (res.status === 200) result = JSON.parse(text) as typeof result;
    else {
      expect(res.status, text).toBe(202);
      res = await send();
    }
  }
  expect(result?.node).toMatchObject({ path: 'while-down/dir', kind: 'directory' });
  expect((await stat(m.abs('while-down/dir'))).isDirectory()).toBe(true);
  expect(await entries('idempotency_key = $2', [key])).toMatchObject([{ id: result?.journalEntryId, command: 'mkdir', status: 'succeeded', recovered: false }]);

  // SIGTERM now: a clean exit.
  expect(await stopAgent(agent)).toEqual({ code: 0, signal: null });
});

it('changes made while the agent was down are caught up by the rescan at its next start', { timeout: 60_000 }, async () => {
  expect(agent.child.exitCode).toBe(0); // stopped by the previous test
  const data = await m.node('crash/data.txt');
  const dir = await m.node('while-down/dir');
  await writeFile(m.abs('crash/data.txt'), 'rewritten while nobody watched');
  await rm(m.abs('while-down/dir'), { recursive: true });
  await mkdir(m.abs('offline'));
  await writeFile(m.abs('offline/new.txt'), 'new');

  await restart();
  await eventually(async () => {
    const [d1, d2, n] = await Promise.all([m.node('crash/data.txt'), m.node('while-down/dir'), m.node('offline/new.txt')]);
    return d1?.sizeBytes === 30 && d1.consistencyState === 'ACTIVE' && d2?.consistencyState === 'MISSING' && n?.consistencyState === 'ACTIVE' ? true : undefined;
  }, 'the catch-up rescan to converge', 45_000, agent);
  expect(await m.node('crash/data.txt')).toMatchObject({ id: data?.id, version: (data?.version ?? 0) + 1 });
  expect((await m.node('while-down/dir'))?.id).toBe(dir?.id);
  expect(await stopAgent(agent)).toEqual({ code: 0, signal: null });
});
