import { afterAll, beforeAll, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../agent/agent.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { createAgentMount, eventually, startDeployment, uniqueAgentId, type AgentMount, type Deployment } from './support/agent-process.ts';

// The agent keeps its watchers in step with what it owns: a mount assigned later gets one, a
// mount taken away loses its, a watcher that could not start is tried again.
let d: Deployment;
let agent: RunningAgent | undefined;
const mounts: AgentMount[] = [];
const agentId = uniqueAgentId('refresh');

beforeAll(async () => {
  d = await startDeployment();
});
afterAll(async () => {
  await agent?.stop();
  for (const m of mounts) await m.cleanup();
  await d?.close();
});

it('watches mounts assigned after start, stops watching one taken away, and retries one whose root came back', { timeout: 60_000 }, async () => {
  const first = await createAgentMount(d, agentId);
  const broken = await createAgentMount(d, agentId);
  mounts.push(first, broken);
  await broken.cleanup(); // its root is gone: its watcher cannot start
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
  expect(running.watched()).toEqual([first.mount.key]);

  const later = await createAgentMount(d, agentId);
  mounts.push(later);
  await eventually(async () => (running.watched().includes(later.mount.key) ? true : undefined), 'the newly assigned mount to be watched');

  await d.pool.query(`UPDATE filestore.mounts SET agent_id = 'someone-else' WHERE id = $1`, [first.mount.id]);
  await eventually(async () => (!running.watched().includes(first.mount.key) ? true : undefined), 'the reassigned mount to be let go');

  const { mkdir } = await import('node:fs/promises');
  await mkdir(broken.root, { recursive: true });
  await eventually(async () => (running.watched().includes(broken.mount.key) ? true : undefined), 'the mount whose root came back to be watched');
  expect(running.watched()).toEqual([broken.mount.key, later.mount.key].sort());
});
