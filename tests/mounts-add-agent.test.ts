/**
 * Issue 16, item 3: a local mount's root is checked by the agent that owns it — an API-only
 * process (no local disks) has the agent look through its command queue, on the agent's host
 * and real paths. An agent that is not running makes the check 503 AGENT_UNAVAILABLE, naming
 * the way round ("check": false).
 */
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startAgentProcess, startApiProcess, uniqueAgentId, type AgentProcess, type Served } from './support/dispatch-cluster.ts';
import { uniqueKey } from './support/filestore.ts';

let api: Served;
let agent: AgentProcess;
let scratch: string;

beforeAll(async () => {
  api = await startApiProcess();
  agent = await startAgentProcess(uniqueAgentId());
  scratch = await mkdtemp(path.join(os.tmpdir(), 'filestore-agent-mounts-'));
});
afterAll(async () => {
  await agent?.close();
  await api?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

async function post(body: Record<string, unknown>): Promise<{ status: number; body: any }> {
  const res = await api.call('POST', '/v1/mounts', { json: body });
  return { status: res.status, body: await res.json() };
}

it('the owning agent checks the root: missing, then fine, then overlapping through a symlink only its real paths show', async () => {
  const root = path.join(scratch, 'data');
  const missing = await post({ kind: 'local', key: uniqueKey('ag'), rootPath: root, agentId: agent.agentId });
  expect(missing).toMatchObject({ status: 400, body: { error: { code: 'MOUNT_ROOT_NOT_FOUND' } } });
  expect(missing.body.error.message).toContain(`rootPath ${root} does not exist on this host`);

  await mkdir(path.join(root, 'inner'), { recursive: true });
  const key = uniqueKey('ag');
  expect(await post({ kind: 'local', key, rootPath: root, agentId: agent.agentId })).toMatchObject({ status: 201, body: { key, agentId: agent.agentId } });

  const link = path.join(scratch, 'link');
  await symlink(path.join(root, 'inner'), link);
  expect(await post({ kind: 'local', key: uniqueKey('ag'), rootPath: link, agentId: agent.agentId })).toMatchObject({
    status: 409,
    body: { error: { code: 'MOUNT_OVERLAP', details: { mount: key } } },
  });
  // Without the check, the API process applies what needs no disk: the plain overlap.
  expect(await post({ kind: 'local', key: uniqueKey('ag'), rootPath: path.join(root, 'inner'), agentId: agent.agentId, check: false })).toMatchObject({
    status: 409,
    body: { error: { code: 'MOUNT_OVERLAP' } },
  });
});

it('an agent that is not running cannot check: 503 AGENT_UNAVAILABLE naming check false, which registers it', async () => {
  const absent = uniqueAgentId('absent');
  const root = path.join(scratch, 'later');
  const r = await post({ kind: 'local', key: uniqueKey('ag'), rootPath: root, agentId: absent });
  expect(r).toMatchObject({ status: 503, body: { error: { code: 'AGENT_UNAVAILABLE' } } });
  expect(r.body.error.message).toContain('"check": false');
  expect(await post({ kind: 'local', key: uniqueKey('ag'), rootPath: root, agentId: absent, check: false })).toMatchObject({ status: 201 });
});

it("a pending entry of the agent's mount, resolved through the API-only process, is judged by the agent from its disk", async () => {
  const root = path.join(scratch, 'judged');
  await mkdir(path.join(root, 'made'), { recursive: true });
  const key = uniqueKey('ag');
  const added = await post({ kind: 'local', key, rootPath: root, agentId: agent.agentId });
  expect(added.status).toBe(201);
  // What processes that died after journaling leave: one mkdir that reached the disk, one that did not.
  const { rows } = await api.core.pool.query<{ id: string }>(
    `INSERT INTO filestore.journal_entries (mount_id, command, request) VALUES ($1, 'mkdir', '{"path":"made"}'), ($1, 'mkdir', '{"path":"never"}') RETURNING id`,
    [added.body.id],
  );
  const [made, never] = rows.map((r) => Number(r.id));
  const resolve = async (id: number | undefined) => {
    const res = await api.call('POST', `/v1/journal/${id}/resolve`);
    return { status: res.status, body: (await res.json()) as any };
  };
  expect(await resolve(made)).toMatchObject({ status: 200, body: { outcome: 'succeeded', entry: { id: made, status: 'succeeded', recovered: true } } });
  expect(await resolve(never)).toMatchObject({ status: 200, body: { outcome: 'failed', entry: { id: never, status: 'failed', error: { code: 'INTERRUPTED' } } } });
  const node = await api.call('GET', `/v1/nodes/by-path?mountId=${key}&path=made`);
  expect(await node.json()).toMatchObject({ kind: 'directory' });
  expect(await resolve(made)).toMatchObject({ status: 409, body: { error: { code: 'JOURNAL_ENTRY_NOT_PENDING' } } });
});
