import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handler } from '../lambdas/api.ts';
import { loadLambdaConfig } from '../lambdas/support/config.ts';
import { closeLambdaCore, lambdaCore } from '../lambdas/support/core.ts';
import type { ApiGatewayEvent } from '../shared/api/lambda/adapter.ts';
import { startCommandWorker } from '../shared/dispatch/worker.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { agentMount, startAgentProcess, uniqueAgentId, type AgentProcess } from './support/dispatch-cluster.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { eventually } from './support/http.ts';
import { lambdaContext } from './support/lambda-context.ts';

// The API Lambda (agentId null: no local disks) and an agent owning a local mount, on the real
// PostgreSQL and Redis: the Lambda dispatches the mount's commands to the agent as the API
// server does, and waits FILESTORE_COMMAND_WAIT_MS (under API Gateway's 30 s) before 202.

interface Result {
  journalEntryId: number;
  node: { id: number; path: string; kind: string };
}
interface Accepted {
  status: 'accepted';
  agentId: string;
  idempotencyKey: string;
  journalEntry: { id: number; status: string } | null;
  message: string;
}
interface JournalItem {
  id: number;
  command: string;
  status: string;
  idempotencyKey: string | null;
  principal: string | null;
}

const saved = { ...process.env };
const WAIT_MS = 500;
const cleanups: Array<() => Promise<unknown>> = [];
let agent: AgentProcess;

/** An API Gateway HTTP API event (payload 2.0) shaped as the fixtures, from a writer and reader. */
function event(method: string, rawPath: string, o: { query?: string; json?: unknown; headers?: Record<string, string> } = {}): ApiGatewayEvent {
  const e = JSON.parse(readFileSync(new URL('./fixtures/lambda/apigw-mkdir-as-reader.json', import.meta.url), 'utf8')) as ApiGatewayEvent;
  e.requestContext.http.method = method;
  e.rawPath = rawPath;
  e.requestContext.http.path = rawPath;
  e.rawQueryString = o.query ?? '';
  e.requestContext.authorizer = { lambda: { principal: 'lambda-writer', scopes: 'read write' } };
  e.body = o.json === undefined ? undefined : JSON.stringify(o.json);
  e.isBase64Encoded = false;
  delete e.headers['content-length'];
  Object.assign(e.headers, o.headers ?? {});
  return e;
}

async function invoke<T>(e: ApiGatewayEvent, status: number): Promise<T> {
  const r = (await handler(e, lambdaContext())) as APIGatewayProxyStructuredResultV2 & { statusCode: number };
  expect(r.statusCode, r.body).toBe(status);
  return JSON.parse(r.body as string) as T;
}

const mkdir = (mountKey: string, p: string, headers: Record<string, string> = {}) =>
  event('POST', '/v1/commands/mkdir', { json: { mountId: mountKey, path: p }, headers });

async function journal(mountId: string): Promise<JournalItem[]> {
  const q = new URLSearchParams({ mountId, limit: '1000' }).toString();
  return (await invoke<{ items: JournalItem[] }>(event('GET', '/v1/journal', { query: q }), 200)).items;
}

async function mountOf(agentId: string) {
  const m = await agentMount(agent.core, agentId);
  cleanups.push(m.cleanup);
  return m;
}

beforeAll(async () => {
  agent = await startAgentProcess(uniqueAgentId('lambda'));
  Object.assign(process.env, {
    DATABASE_URL: TEST_DATABASE_URL,
    REDIS_URL: TEST_REDIS_URL,
    FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET,
    FILESTORE_COMMAND_WAIT_MS: String(WAIT_MS),
  });
  const lc = await lambdaCore();
  expect(lc.config.commandWaitMs).toBe(WAIT_MS);
});

afterAll(async () => {
  for (const f of cleanups) await f().catch(() => {});
  await closeLambdaCore();
  await agent?.close();
  process.env = { ...saved };
});

describe('the API Lambda and local mounts of agents', () => {
  it('mkdir on a running agent\'s mount answers 200: the directory is on the agent\'s disk and in the catalogue, journaled by the caller', async () => {
    const t = await mountOf(agent.agentId);
    const r = await invoke<Result>(mkdir(t.mount.key, 'from-lambda', { 'x-correlation-id': 'lambda-dispatch-1' }), 200);
    expect(r.node).toMatchObject({ path: 'from-lambda', kind: 'directory' });
    expect(agent.ran).toContain(r.journalEntryId);
    expect((await stat(path.join(t.root, 'from-lambda'))).isDirectory()).toBe(true);
    const q = new URLSearchParams({ mountId: t.mount.key, path: 'from-lambda' }).toString();
    const node = await invoke<Result['node']>(event('GET', '/v1/nodes/by-path', { query: q }), 200);
    expect(node).toMatchObject({ id: r.node.id, kind: 'directory' });
    const entry = (await journal(t.mount.id)).find((e) => e.id === r.journalEntryId);
    expect(entry).toMatchObject({ command: 'mkdir', status: 'succeeded', principal: 'lambda-writer' });
  });

  it("a file's bytes are not carried by the Lambda: PUT answers 307 to the owning agent", async () => {
    const t = await mountOf(agent.agentId);
    const e = event('PUT', '/v1/files', { query: new URLSearchParams({ mountId: t.mount.key, path: 'a.bin' }).toString() });
    e.body = Buffer.from('bytes').toString('base64');
    e.isBase64Encoded = true;
    e.headers['content-type'] = 'application/octet-stream';
    const r = await invoke<{ agentId: string; location: string }>(e, 307);
    expect(r).toMatchObject({ agentId: agent.agentId, location: expect.stringMatching(new RegExp(`^${agent.url}/v1/files\\?`)) });
  });

  // The test's own limit is below the 20–25 s a wait not taken from FILESTORE_COMMAND_WAIT_MS would last.
  it('an agent not consuming its queue: 202 after FILESTORE_COMMAND_WAIT_MS with the command\'s key; once it consumes, the command completes and its key gets the result', { timeout: 15_000 }, async () => {
    const idle = await startAgentProcess(uniqueAgentId('lambda-idle'), { worker: false });
    cleanups.unshift(() => idle.close());
    const t = await mountOf(idle.agentId);
    const key = randomUUID();
    const accepted = await invoke<Accepted>(mkdir(t.mount.key, 'later', { 'idempotency-key': key }), 202);
    expect(accepted).toMatchObject({ status: 'accepted', agentId: idle.agentId, idempotencyKey: key, journalEntry: null });
    expect(accepted.message).toContain(key);
    await expect(stat(path.join(t.root, 'later'))).rejects.toThrow();

    const worker = await startCommandWorker(idle.core, idle.agentId);
    cleanups.unshift(() => worker.close());
    const done = await eventually(async () => (await journal(t.mount.id)).find((e) => e.idempotencyKey === key && e.status === 'succeeded'), 'the queued mkdir to complete');
    expect(done).toMatchObject({ command: 'mkdir', principal: 'lambda-writer' });
    expect((await stat(path.join(t.root, 'later'))).isDirectory()).toBe(true);
    // The same key through the Lambda: the first run's result, not a second command.
    const result = await invoke<Result>(mkdir(t.mount.key, 'later', { 'idempotency-key': key }), 200);
    expect(result.journalEntryId).toBe(done.id);
    expect((await journal(t.mount.id)).filter((e) => e.command === 'mkdir')).toHaveLength(1);
  });
});

describe('FILESTORE_COMMAND_WAIT_MS', () => {
  const base = { REDIS_URL: 'rediss://cache.example:6379', DATABASE_URL: 'postgres://u:p@db.example/filestore' };

  it('defaults to 20 s and takes values up to 25 s', () => {
    expect(loadLambdaConfig(base).commandWaitMs).toBe(20_000);
    expect(loadLambdaConfig({ ...base, FILESTORE_COMMAND_WAIT_MS: '25000' }).commandWaitMs).toBe(25_000);
    expect(loadLambdaConfig({ ...base, FILESTORE_COMMAND_WAIT_MS: '0' }).commandWaitMs).toBe(0);
  });

  it('more than 25 s (API Gateway cuts at 30 s, the outbox flush takes up to 5 s), negative or not a number is CONFIG_ERROR naming it', () => {
    for (const value of ['26000', '-1', 'soon']) {
      expect(() => loadLambdaConfig({ ...base, FILESTORE_COMMAND_WAIT_MS: value })).toThrow(expect.objectContaining({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_COMMAND_WAIT_MS') }));
    }
  });
});
