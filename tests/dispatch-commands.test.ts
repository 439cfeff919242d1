import { randomUUID } from 'node:crypto';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FilestoreClient, FilestoreClientError, FilestoreCommandPendingError } from '../shared/client/index.ts';
import { registerAgent } from '../shared/catalogue/agents.ts';
import { commandQueueName } from '../shared/dispatch/messages.ts';
import { TEST_REDIS_URL } from './support/env.ts';
import { expectError, qs } from './support/http.ts';
import { Gate, TOKEN, agentMount, startAgentProcess, startApiProcess, uniqueAgentId, type AgentProcess, type Served } from './support/dispatch-cluster.ts';

// An API-only process (no agent id, no local disks) and an agent owning a local mount, on
// the real PostgreSQL and Redis: commands for the agent's mount sent to the API process run
// on the agent through filestore-commands-<agentId>, and the caller gets their outcome.

interface Result {
  journalEntryId: number;
  node: { id: number; path: string; kind: string; version: number; metadata: Record<string, unknown>; deletedAt: string | null };
}
interface Accepted {
  status: 'accepted';
  agentId: string;
  idempotencyKey: string;
  journalEntry: { id: number; status: string; idempotencyKey: string | null } | null;
  message: string;
}
interface JournalItem {
  id: number;
  command: string;
  status: string;
  idempotencyKey: string | null;
  principal: string | null;
  correlationId: string | null;
}

const gate = new Gate();
let api: Served;
let agent: AgentProcess;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  api = await startApiProcess();
  agent = await startAgentProcess(uniqueAgentId(), { hooks: { beforeStorage: gate.hook } });
});

afterAll(async () => {
  for (const f of cleanups) await f().catch(() => {});
  await agent?.close();
  await api?.close();
});

async function mountOfAgent(agentId: string | null = agent.agentId) {
  const m = await agentMount(api.core, agentId);
  cleanups.push(m.cleanup);
  return m;
}

async function json<T>(res: Promise<Response>, status: number): Promise<T> {
  const r = await res;
  const text = await r.text();
  expect(r.status, text).toBe(status);
  return JSON.parse(text) as T;
}

const command = (name: string, body: Record<string, unknown>, headers: Record<string, string> = {}) =>
  api.call('POST', `/v1/commands/${name}`, { json: body, headers });

async function journal(mountId: string): Promise<JournalItem[]> {
  return (await json<{ items: JournalItem[] }>(api.call('GET', `/v1/journal?${qs({ mountId, limit: 1000 })}`), 200)).items;
}

describe('commands for a local mount of another agent', () => {
  it('mkdir, move, copy, metadata and delete sent to an API-only process run on the owning agent and answer 200 with the result', async () => {
    const t = await mountOfAgent();
    const mk = await json<Result>(command('mkdir', { mountId: t.mount.key, path: 'docs/inner', parents: true }, { 'x-correlation-id': 'dispatch-corr-1' }), 200);
    expect(mk.node).toMatchObject({ path: 'docs/inner', kind: 'directory', version: 1 });
    expect((await stat(path.join(t.root, 'docs/inner'))).isDirectory()).toBe(true);

    // A file to work with, through the agent's own API (bytes never go through the queue).
    const put = await json<Result>(agent.call('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'docs/a.txt' })}`, { body: 'hello agent' }), 200);

    const moved = await json<Result>(command('move', { mountId: t.mount.key, path: 'docs/a.txt', targetPath: 'docs/inner/b.txt' }), 200);
    expect(moved.node).toMatchObject({ path: 'docs/inner/b.txt', id: put.node.id });
    expect(await readFile(path.join(t.root, 'docs/inner/b.txt'), 'utf8')).toBe('hello agent');
    await expect(stat(path.join(t.root, 'docs/a.txt'))).rejects.toThrow();

    const copied = await json<Result>(command('copy', { mountId: t.mount.id, path: 'docs/inner', targetPath: 'copy' }), 200);
    expect(copied.node).toMatchObject({ path: 'copy', kind: 'directory' });
    expect(await readFile(path.join(t.root, 'copy/b.txt'), 'utf8')).toBe('hello agent');

    const meta = await json<Result>(
      api.call('PATCH', `/v1/nodes/${moved.node.id}/metadata`, { json: { set: { owner: 'ops' } }, headers: { 'if-match': String(moved.node.version) } }),
      200,
    );
    expect(meta.node.metadata).toEqual({ owner: 'ops' });

    const deleted = await json<Result>(command('delete', { mountId: t.mount.key, path: 'copy', recursive: true }), 200);
    expect(deleted.node.deletedAt).not.toBeNull();
    await expect(stat(path.join(t.root, 'copy'))).rejects.toThrow();

    // Every one of them ran on the agent (its orchestrator's storage step saw the entry)…
    const ids = [mk, moved, copied, meta, deleted].map((r) => r.journalEntryId);
    for (const id of ids) expect(agent.ran).toContain(id);
    // …and the journal records them as the caller made them, each with an idempotency key
    // (generated when the caller sent none: a job run again after a crash replays).
    const entries = new Map((await journal(t.mount.id)).map((e) => [e.id, e]));
    for (const id of ids) {
      expect(entries.get(id)).toMatchObject({ status: 'succeeded', principal: 'test-admin', idempotencyKey: expect.any(String) });
    }
    expect(entries.get(mk.journalEntryId)?.correlationId).toBe('dispatch-corr-1');
    // The catalogue, read through the API process, agrees with the disk.
    const node = await json<Result['node']>(api.call('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'docs/inner/b.txt' })}`), 200);
    expect(node).toMatchObject({ metadata: { owner: 'ops' }, version: meta.node.version });
  });

  it("errors from the agent come back with the agent's code and status", async () => {
    const t = await mountOfAgent();
    await json<Result>(command('mkdir', { mountId: t.mount.key, path: 'taken' }), 200);
    await expectError(command('mkdir', { mountId: t.mount.key, path: 'taken' }), 409, 'ALREADY_EXISTS');
    await expectError(command('mkdir', { mountId: t.mount.key, path: 'no/parent' }), 404, 'NOT_FOUND');
    await expectError(command('delete', { mountId: t.mount.key, path: 'absent.txt' }), 404, 'NOT_FOUND');
    await expectError(command('move', { mountId: t.mount.key, path: 'taken', targetPath: 'taken/inside' }), 409, 'MOVE_INTO_SELF');
    await expectError(command('mkdir', { mountId: t.mount.key, path: 'a/../b' }), 400, 'INVALID_PATH');
    const key = randomUUID();
    await json<Result>(command('mkdir', { mountId: t.mount.key, path: 'k1' }, { 'idempotency-key': key }), 200);
    await expectError(command('mkdir', { mountId: t.mount.key, path: 'k2' }, { 'idempotency-key': key }), 409, 'IDEMPOTENCY_CONFLICT');
    // The same key and body replay the first result.
    const again = await json<Result>(command('mkdir', { mountId: t.mount.key, path: 'k1' }, { 'idempotency-key': key }), 200);
    expect(again.node.path).toBe('k1');
  });

  it('a mount whose agent never registered, stopped, or missed its heartbeats is 503 AGENT_UNAVAILABLE, and nothing is queued', async () => {
    const never = uniqueAgentId('never');
    const t1 = await mountOfAgent(never);
    const e1 = await expectError(command('mkdir', { mountId: t1.mount.key, path: 'x' }), 503, 'AGENT_UNAVAILABLE');
    expect(e1.details).toMatchObject({ agentId: never, mountId: t1.mount.id });

    const silent = uniqueAgentId('silent');
    await registerAgent(api.core.pool, { id: silent, host: 'h', version: 'test', url: agent.url, heartbeatIntervalMs: 1_000 });
    await api.core.pool.query(`UPDATE filestore.agents SET heartbeat_at = now() - interval '1 hour' WHERE id = $1`, [silent]);
    const t2 = await mountOfAgent(silent);
    await expectError(command('delete', { mountId: t2.mount.key, path: 'x' }), 503, 'AGENT_UNAVAILABLE');
    await expectError(api.call('GET', `/v1/files?${qs({ mountId: t2.mount.key, path: 'x' })}`), 503, 'AGENT_UNAVAILABLE');

    const stopped = await startAgentProcess(uniqueAgentId('stopped'), { worker: false });
    const t3 = await mountOfAgent(stopped.agentId);
    await stopped.close();
    const e3 = await expectError(command('mkdir', { mountId: t3.mount.key, path: 'x' }), 503, 'AGENT_UNAVAILABLE');
    expect(e3.message).toMatch(/stopped/);

    const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
    try {
      for (const id of [never, silent, stopped.agentId]) {
        const q = new Queue(commandQueueName(id), { connection: redis, prefix: api.core.queuePrefix });
        expect(await q.getJobCounts('wait', 'active', 'completed', 'failed')).toEqual({ wait: 0, active: 0, completed: 0, failed: 0 });
        await q.obliterate({ force: true });
        await q.close();
      }
    } finally {
      await redis.quit();
    }
  });

  it('an API-only process refuses a local mount assigned to no agent with 503 AGENT_UNAVAILABLE', async () => {
    const t = await mountOfAgent(null);
    await expectError(command('mkdir', { mountId: t.mount.key, path: 'x' }), 503, 'AGENT_UNAVAILABLE');
    await expectError(api.call('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'x' })}`, { body: 'x' }), 503, 'AGENT_UNAVAILABLE');
  });

  it('a command that outlasts the wait is 202 with its pending journal entry; the same Idempotency-Key then gets its result', async () => {
    const t = await mountOfAgent();
    const key = randomUUID();
    const held = gate.hold();
    const first = command('mkdir', { mountId: t.mount.key, path: 'slow' }, { 'idempotency-key': key, prefer: 'wait=1' });
    // The agent has journaled the command and is inside it, held at the storage step.
    const entryId = await held.entered;
    expect((await first).status).toBe(202);
    const accepted = await json<Accepted>(command('mkdir', { mountId: t.mount.key, path: 'slow' }, { 'idempotency-key': key, prefer: 'wait=0' }), 202);
    expect(accepted).toMatchObject({ status: 'accepted', agentId: agent.agentId, idempotencyKey: key, journalEntry: { id: entryId, status: 'pending', idempotencyKey: key } });
    expect(accepted.message).toMatch(/GET \/v1\/journal/);
    held.release();
    const result = await json<Result>(command('mkdir', { mountId: t.mount.key, path: 'slow' }, { 'idempotency-key': key }), 200);
    expect(result.journalEntryId).toBe(entryId);
    expect((await stat(path.join(t.root, 'slow'))).isDirectory()).toBe(true);
    const mine = (await journal(t.mount.id)).filter((e) => e.idempotencyKey === key);
    expect(mine).toMatchObject([{ id: entryId, status: 'succeeded' }]);
  });

  it('a command queued before the agent consumes its queue is 202 without an entry, then runs once the worker starts', async () => {
    const idle = await startAgentProcess(uniqueAgentId('idle'), { worker: false });
    cleanups.push(() => idle.close());
    const t = await mountOfAgent(idle.agentId);
    const key = randomUUID();
    const accepted = await json<Accepted>(command('mkdir', { mountId: t.mount.key, path: 'later' }, { 'idempotency-key': key, prefer: 'wait=0' }), 202);
    expect(accepted).toMatchObject({ agentId: idle.agentId, idempotencyKey: key, journalEntry: null });
    const { startCommandWorker } = await import('../shared/dispatch/worker.ts');
    const worker = await startCommandWorker(idle.core, idle.agentId);
    cleanups.unshift(() => worker.close());
    const result = await json<Result>(command('mkdir', { mountId: t.mount.key, path: 'later' }, { 'idempotency-key': key }), 200);
    expect(result.node.path).toBe('later');
    // Two jobs (the first request and its retry), one command: the retry replayed it.
    expect((await journal(t.mount.id)).filter((e) => e.command === 'mkdir')).toHaveLength(1);
  });
});

describe('file bytes of a local mount of another agent', () => {
  it('PUT and GET /v1/files answer 307 to the same request on the agent, which serves it', async () => {
    const t = await mountOfAgent();
    const q = qs({ mountId: t.mount.key, path: 'bytes/a.bin' });
    const put = await api.call('PUT', `/v1/files?${q}`, { body: 'not read here' });
    expect(put.status).toBe(307);
    expect(put.headers.get('x-filestore-agent')).toBe(agent.agentId);
    const location = put.headers.get('location') as string;
    expect(location).toBe(`${agent.url}/v1/files?${new URLSearchParams({ mountId: t.mount.key, path: 'bytes/a.bin' }).toString()}`);
    expect(await put.json()).toEqual({ agentId: agent.agentId, location });

    const res = await fetch(location, { method: 'PUT', headers: { authorization: `Bearer ${TOKEN}` }, body: 'agent bytes' });
    expect(res.status).toBe(200);
    expect(await readFile(path.join(t.root, 'bytes/a.bin'), 'utf8')).toBe('agent bytes');

    const get = await api.call('GET', `/v1/files?${q}`);
    expect(get.status).toBe(307);
    expect(get.headers.get('location')).toBe(location);
    await get.body?.cancel();
  });

  it('the typed client follows the redirect with its token (GET, PUT of a Buffer or a file) and reports a stream it cannot resend', async () => {
    const t = await mountOfAgent();
    const client = new FilestoreClient({ baseUrl: api.url, token: TOKEN });
    const put = await client.putFile({ mountId: t.mount.key, path: 'c/one.txt', body: Buffer.from('one') });
    expect(put.node).toMatchObject({ path: 'c/one.txt', sizeBytes: 3 });
    const local = path.join(t.root, '..', `${path.basename(t.root)}-upload.txt`);
    await writeFile(local, 'from a file');
    cleanups.push(() => rm(local, { force: true }));
    await client.putLocalFile({ mountId: t.mount.key, path: 'c/two.txt', file: local });
    expect(await readFile(path.join(t.root, 'c/two.txt'), 'utf8')).toBe('from a file');

    const got = await client.getFile({ mountId: t.mount.key, path: 'c/one.txt' });
    expect(got.status).toBe(200);
    expect(Buffer.concat(await got.body.toArray()).toString()).toBe('one');
    const ranged = await client.getFile({ mountId: t.mount.key, path: 'c/two.txt', range: { start: 5 } });
    expect(ranged.status).toBe(206);
    expect(Buffer.concat(await ranged.body.toArray()).toString()).toBe('a file');

    const err = await client.putFile({ mountId: t.mount.key, path: 'c/three.txt', body: Readable.from([Buffer.from('streamed')]) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FilestoreClientError);
    expect((err as Error).message).toMatch(new RegExp(`agent "${agent.agentId}"`));
    await expect(stat(path.join(t.root, 'c/three.txt'))).rejects.toThrow();

    // Commands through the client: a result, or FilestoreCommandPendingError when it outlasts the wait.
    const mk = await client.mkdir({ mountId: t.mount.key, path: 'c/dir' });
    expect(agent.ran).toContain(mk.journalEntryId);
  });

  it('an agent without a registered url cannot be redirected to: 503 AGENT_UNAVAILABLE', async () => {
    const hidden = await startAgentProcess(uniqueAgentId('nourl'), { url: false, worker: false });
    cleanups.push(() => hidden.close());
    const t = await mountOfAgent(hidden.agentId);
    const e = await expectError(api.call('GET', `/v1/files?${qs({ mountId: t.mount.key, path: 'x' })}`), 503, 'AGENT_UNAVAILABLE');
    expect(e.message).toMatch(/HTTP address/);
  });

  it('the typed client turns a 202 into FilestoreCommandPendingError with the key to retry with', async () => {
    const short = await startApiProcess({ commandWaitMs: 1 });
    cleanups.unshift(() => short.close());
    const t = await mountOfAgent();
    const held = gate.hold();
    const client = new FilestoreClient({ baseUrl: short.url, token: TOKEN });
    const err = await client.mkdir({ mountId: t.mount.key, path: 'pending' }, { idempotencyKey: 'client-pending-' + randomUUID() }).catch((e: unknown) => e);
    held.release();
    expect(err).toBeInstanceOf(FilestoreCommandPendingError);
    const pending = err as FilestoreCommandPendingError;
    expect(pending.agentId).toBe(agent.agentId);
    const done = await new FilestoreClient({ baseUrl: api.url, token: TOKEN }).mkdir({ mountId: t.mount.key, path: 'pending' }, { idempotencyKey: pending.idempotencyKey });
    expect(done.node.path).toBe('pending');
  });
});
