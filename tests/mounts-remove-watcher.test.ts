/**
 * Issue 16, item 3: removing a mount (DELETE /v1/mounts/:id, here on its agent's own API) closes
 * its watcher — at the agent's next mount refresh — and leaves its files where they are.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../agent/agent.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { createAgentMount, eventually, startDeployment, uniqueAgentId, type AgentMount, type Deployment } from './support/agent-process.ts';

let d: Deployment;
let agent: RunningAgent | undefined;
const mounts: AgentMount[] = [];
const agentId = uniqueAgentId('remove');

beforeAll(async () => {
  d = await startDeployment();
});
afterAll(async () => {
  await agent?.stop();
  for (const m of mounts) await m.cleanup();
  await d?.close();
});

it('the removed mount is no longer watched; the other one still is; storage is untouched', { timeout: 60_000 }, async () => {
  const gone = await createAgentMount(d, agentId);
  const kept = await createAgentMount(d, agentId);
  mounts.push(gone, kept);
  await writeFile(path.join(gone.root, 'stays.txt'), 'here');
  agent = await startAgent({
    databaseUrl: d.databaseUrl,
    redisUrl: d.redisUrl,
    agentId,
    commandSecrets: [TEST_COMMAND_SECRET],
    host: '127.0.0.1',
    port: 0,
    tokens: [],
    authDisabled: true,
    watchers: { enabled: true, debounceMs: 20 },
    mountRefreshMs: 100,
  });
  const running = agent;
  expect(running.watched()).toEqual([gone.mount.key, kept.mount.key].sort());

  const res = await fetch(`${running.server.url}/v1/mounts/${gone.mount.key}`, { method: 'DELETE' });
  expect(res.status, await res.clone().text()).toBe(200);
  expect(await res.json()).toMatchObject({ mount: { key: gone.mount.key } });
  await eventually(async () => (!running.watched().includes(gone.mount.key) ? true : undefined), 'the removed mount to be let go');
  expect(running.watched()).toEqual([kept.mount.key]);
  expect(await readFile(path.join(gone.root, 'stays.txt'), 'utf8')).toBe('here');
});
