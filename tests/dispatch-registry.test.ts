import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findAgent, heartbeat, isAlive, listAgents, markStopped, registerAgent, type Agent } from '../shared/catalogue/agents.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { executesHere } from '../shared/orchestrator/ownership.ts';
import { startAgentPresence } from '../shared/dispatch/presence.ts';
import { TEST_DATABASE_URL } from './support/env.ts';
import { uniqueAgentId } from './support/dispatch-cluster.ts';

// The agent registry (filestore.agents), liveness by heartbeat, and which process executes which mount.

let pool: Pool;
beforeAll(() => {
  pool = createPool(TEST_DATABASE_URL, 4);
});
afterAll(async () => {
  await pool.end();
});

const agentAt = (heartbeatAt: Date, heartbeatIntervalMs: number, stoppedAt: Date | null = null): Agent => ({
  id: 'a',
  host: 'h',
  version: 'v',
  url: null,
  heartbeatIntervalMs,
  startedAt: heartbeatAt,
  heartbeatAt,
  stoppedAt,
  instance: null,
});

describe('agent registry', () => {
  it('an agent registers, heartbeats, is listed alive, and is not alive once marked stopped until it registers again', async () => {
    const id = uniqueAgentId('reg');
    const registered = await registerAgent(pool, { id, host: 'host-1', version: '1.2.3', url: 'http://10.0.0.1:4301', heartbeatIntervalMs: 2_000 });
    expect(registered).toMatchObject({ id, host: 'host-1', version: '1.2.3', url: 'http://10.0.0.1:4301', heartbeatIntervalMs: 2_000, stoppedAt: null });
    expect(await heartbeat(pool, id, null)).toBe('ok');
    const { agents, now } = await listAgents(pool);
    const listed = agents.find((a) => a.id === id) as Agent;
    expect(listed.heartbeatAt.getTime()).toBeGreaterThanOrEqual(registered.heartbeatAt.getTime());
    expect(isAlive(listed, now)).toBe(true);

    await markStopped(pool, id);
    const stopped = await findAgent(pool, id);
    expect(stopped.agent?.stoppedAt).toBeInstanceOf(Date);
    expect(isAlive(stopped.agent as Agent, stopped.now)).toBe(false);
    expect(await heartbeat(pool, id, null)).toBe('stopped'); // a stopped agent's heartbeat does not revive it…
    await registerAgent(pool, { id, host: 'host-2', version: '1.2.4', heartbeatIntervalMs: 2_000 }); // …registering again does
    const again = await findAgent(pool, id);
    expect(again.agent).toMatchObject({ host: 'host-2', version: '1.2.4', url: null, stoppedAt: null });
    expect(isAlive(again.agent as Agent, again.now)).toBe(true);
    expect(await findAgent(pool, uniqueAgentId('absent'))).toMatchObject({ agent: null, now: expect.any(Date) });
  });

  it('an agent is alive while its last heartbeat is within three intervals (or the ttl given)', () => {
    const now = new Date('2030-01-01T00:00:10Z');
    expect(isAlive(agentAt(new Date('2030-01-01T00:00:00Z'), 5_000), now)).toBe(true);
    expect(isAlive(agentAt(new Date('2030-01-01T00:00:00Z'), 3_000), now)).toBe(false);
    expect(isAlive(agentAt(new Date('2030-01-01T00:00:00Z'), 3_000), now, 20_000)).toBe(true);
    expect(isAlive(agentAt(new Date('2030-01-01T00:00:09Z'), 5_000, new Date('2030-01-01T00:00:09Z')), now)).toBe(false);
  });

  it('presence registers, registers again after an operator marked it stopped, and marks it stopped on stop', async () => {
    const id = uniqueAgentId('presence');
    const presence = await startAgentPresence(pool, { id, version: 'test', url: 'http://127.0.0.1:1', intervalMs: 50 });
    expect((await findAgent(pool, id)).agent).toMatchObject({ url: 'http://127.0.0.1:1', heartbeatIntervalMs: 50, stoppedAt: null });
    await markStopped(pool, id);
    for (;;) {
      const { agent } = await findAgent(pool, id);
      if (agent?.stoppedAt === null) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await presence.stop();
    const { agent, now } = await findAgent(pool, id);
    expect(agent?.stoppedAt).toBeInstanceOf(Date);
    expect(isAlive(agent as Agent, now)).toBe(false);
  });
});

describe('which process executes a mount', () => {
  const local = (agentId: string | null) => ({ kind: 'local' as const, agentId });
  const s3 = { kind: 's3' as const, agentId: null };

  it('a process without an identity executes everything (one process: npm start, tests)', () => {
    for (const m of [local('x'), local(null), s3]) expect(executesHere(undefined, m)).toBe(true);
  });

  it('an agent executes its own local mounts, unassigned ones and S3 mounts, not another agent’s', () => {
    expect(executesHere('x', local('x'))).toBe(true);
    expect(executesHere('x', local(null))).toBe(true);
    expect(executesHere('x', s3)).toBe(true);
    expect(executesHere('x', local('y'))).toBe(false);
  });

  it('an API-only process executes S3 mounts only', () => {
    expect(executesHere(null, s3)).toBe(true);
    expect(executesHere(null, local('x'))).toBe(false);
    expect(executesHere(null, local(null))).toBe(false);
  });
});
