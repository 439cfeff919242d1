import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startAgent, type AgentOptions, type RunningAgent } from '../agent/agent.ts';
import { findAgent, markStopped, registerAgent } from '../shared/catalogue/agents.ts';
import { commandQueueName, type CommandMessage } from '../shared/dispatch/messages.ts';
import { CommandSigner } from '../shared/dispatch/signing.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { createAgentMount, eventually, startDeployment, uniqueAgentId, type AgentMount, type Deployment } from './support/agent-process.ts';

// An agent whose id another instance took (it could not heartbeat for its lease: a network
// partition, a frozen process) must stop acting as that agent: the other instance may run on
// another host, with another disk behind the same mount.

let d: Deployment;
const agents: RunningAgent[] = [];
const mounts: AgentMount[] = [];

beforeAll(async () => {
  d = await startDeployment();
});
afterAll(async () => {
  for (const a of agents) await a.stop().catch(() => {});
  for (const m of mounts) await m.cleanup();
  await d?.close();
});

const options = (agentId: string, more: Partial<AgentOptions> = {}): AgentOptions => ({
  databaseUrl: d.databaseUrl,
  redisUrl: d.redisUrl,
  agentId,
  commandSecrets: [TEST_COMMAND_SECRET],
  host: '127.0.0.1',
  port: 0,
  tokens: [],
  authDisabled: true,
  heartbeatIntervalMs: 50,
  ...more,
});

/** The registration another instance of `agentId` makes once it took the id over. */
const takeOver = (agentId: string) =>
  registerAgent(d.pool, { id: agentId, host: 'host-b', version: 'test', url: 'http://host-b:4300', heartbeatIntervalMs: 60_000, instance: 'other-instance' });

it('an agent that learns while it starts that another instance took its id does not start: AGENT_ID_IN_USE naming the holder', { timeout: 60_000 }, async () => {
  const agentId = uniqueAgentId('lost-at-start');
  const logs: string[] = [];
  const starting = startAgent(
    options(agentId, {
      log: (l) => logs.push(l),
      // While it starts, another instance takes the id, and this one's heartbeat sees it.
      async prepare() {
        await takeOver(agentId);
        await eventually(async () => (logs.some((l) => l.includes('another instance took this agent id')) ? true : undefined), 'the heartbeat to see the id taken');
      },
    }),
  );
  const outcome = await starting.then(
    (agent) => {
      agents.push(agent);
      return agent;
    },
    (err: unknown) => err,
  );
  expect(outcome).toMatchObject({ code: 'AGENT_ID_IN_USE', details: { agentId, host: 'host-b' } });
  // The holder's registration is untouched.
  expect((await findAgent(d.pool, agentId)).agent).toMatchObject({ instance: 'other-instance', stoppedAt: null });
});

it('an agent that loses its id while it runs stops taking commands first: a command queued as it learns stays queued, and the id’s next holder runs it', { timeout: 60_000 }, async () => {
  const agentId = uniqueAgentId('lost');
  const m = await createAgentMount(d, agentId);
  mounts.push(m);
  const connection = new Redis(d.redisUrl, { maxRetriesPerRequest: null });
  let queue: Queue | undefined;
  try {
    let stopped!: () => void;
    const superseded = new Promise<void>((r) => (stopped = r));
    let queued: Promise<string | undefined> | null = null;
    let message: CommandMessage | null = null;
    const first = await startAgent(
      options(agentId, {
        onSuperseded: () => stopped(),
        log: (l) => {
          // The moment the agent learns it lost its id, a genuine command arrives on its queue.
          if (!queued && message && queue && l.includes('another instance took this agent id')) queued = queue.add('mkdir', message).then((j) => j.id);
        },
      }),
    );
    agents.push(first);
    queue = new Queue(commandQueueName(agentId), { connection, prefix: first.core.queuePrefix });
    await queue.waitUntilReady();
    message = new CommandSigner([TEST_COMMAND_SECRET]).sign({
      command: 'mkdir',
      mountId: m.mount.id,
      input: { path: 'late' },
      context: { idempotencyKey: `late-${randomUUID()}` },
      agentId,
      expiresAt: Date.now() + 600_000,
    }, first.core.queuePrefix);
    await takeOver(agentId);
    await superseded;
    const jobId = await (queued as Promise<string | undefined> | null);
    expect(jobId).toBeDefined();
    // Not run here, not failed: waiting for whoever holds the id.
    const job = await queue.getJob(jobId as string);
    expect(await job?.getState()).toBe('waiting');
    await expect(stat(m.abs('late'))).rejects.toThrow();

    // The other instance stops; this id's next agent runs the command.
    await markStopped(d.pool, agentId, 'other-instance');
    const next = await startAgent(options(agentId));
    agents.push(next);
    await eventually(async () => ((await stat(m.abs('late')).catch(() => null))?.isDirectory() ? true : undefined), 'the next holder to run the command');
  } finally {
    await queue?.close();
    await connection.quit();
  }
});
