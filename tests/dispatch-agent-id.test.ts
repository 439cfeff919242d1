import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findAgent, heartbeat, isAlive, markStopped, registerAgent, type Agent } from '../shared/catalogue/agents.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { startAgentPresence, type AgentPresence } from '../shared/dispatch/presence.ts';
import { TEST_DATABASE_URL } from './support/env.ts';
import { uniqueAgentId } from './support/dispatch-cluster.ts';

// One agent id, one live agent: a second agent started with the id of a live one is refused
// (AGENT_ID_IN_USE), an agent killed without stopping holds its id only for a short lease,
// and an instance that lost its id to another changes nothing of the other's registration.

let pool: Pool;
const running: AgentPresence[] = [];
beforeAll(() => {
  pool = createPool(TEST_DATABASE_URL, 4);
});
afterAll(async () => {
  for (const p of running) await p.stop().catch(() => {});
  await pool.end();
});

async function presence(o: Parameters<typeof startAgentPresence>[1]): Promise<AgentPresence> {
  const p = await startAgentPresence(pool, o);
  running.push(p);
  return p;
}

const row = async (id: string) => (await findAgent(pool, id)) as { agent: Agent; now: Date };

describe('agent ids', () => {
  it('a second agent with the id of a live one is refused with AGENT_ID_IN_USE naming its host and url; the first stays registered and alive', async () => {
    const id = uniqueAgentId('twin');
    await presence({ id, version: 'test', host: 'host-a', url: 'http://host-a.internal:4300', intervalMs: 100 });
    const second = startAgentPresence(pool, { id, version: 'test', host: 'host-b', url: 'http://host-b.internal:4300', intervalMs: 100 });
    await expect(second).rejects.toMatchObject({
      code: 'AGENT_ID_IN_USE',
      status: 409,
      message: expect.stringMatching(/host-a.*http:\/\/host-a\.internal:4300.*FILESTORE_AGENT_ID/s),
      details: { agentId: id, host: 'host-a', url: 'http://host-a.internal:4300' },
    });
    const { agent, now } = await row(id);
    expect(agent).toMatchObject({ host: 'host-a', url: 'http://host-a.internal:4300', stoppedAt: null });
    expect(isAlive(agent, now)).toBe(true);
  });

  it('an agent killed without stopping holds its id until its lease expires; then a restart takes it, and the dead one’s stop or heartbeat changes nothing', async () => {
    const id = uniqueAgentId('restart');
    // What a SIGKILLed agent leaves: a registration with a fresh heartbeat that nobody renews.
    await registerAgent(pool, { id, host: 'dead-host', version: 'test', url: 'http://dead:1', heartbeatIntervalMs: 100, instance: 'dead-instance' });
    const restarted = await presence({ id, version: 'test', host: 'new-host', url: 'http://new:1', intervalMs: 100 });
    expect((await row(id)).agent).toMatchObject({ host: 'new-host', instance: restarted.instance, stoppedAt: null });
    await markStopped(pool, id, 'dead-instance');
    expect(await heartbeat(pool, id, 'dead-instance')).toBe('taken');
    const { agent, now } = await row(id);
    expect(agent).toMatchObject({ host: 'new-host', stoppedAt: null });
    expect(isAlive(agent, now)).toBe(true);
  });

  it('the lease is configurable: a restart with a short lease takes over an id whose holder beats slowly and went silent', async () => {
    const id = uniqueAgentId('lease');
    // A holder heartbeating every minute would hold its id for three minutes by default.
    await registerAgent(pool, { id, host: 'dead-host', version: 'test', heartbeatIntervalMs: 60_000, instance: 'dead-instance' });
    await presence({ id, version: 'test', host: 'new-host', intervalMs: 100, leaseMs: 300 });
    expect((await row(id)).agent).toMatchObject({ host: 'new-host' });
  });

  it('an instance whose id another took over notices at its next heartbeat, and its stop marks nothing stopped', async () => {
    const id = uniqueAgentId('taken');
    let noticed: (holder: Agent) => void = () => {};
    const superseded = new Promise<Agent>((resolve) => (noticed = resolve));
    const first = await presence({ id, version: 'test', host: 'host-a', intervalMs: 50, onSuperseded: (holder) => noticed(holder) });
    // Another instance took the id (as one does after the first went silent for its lease).
    await registerAgent(pool, { id, host: 'host-b', version: 'test', url: 'http://host-b:1', heartbeatIntervalMs: 60_000, instance: 'other-instance' });
    expect(await superseded).toMatchObject({ host: 'host-b', instance: 'other-instance' });
    await first.stop();
    const { agent, now } = await row(id);
    expect(agent).toMatchObject({ host: 'host-b', instance: 'other-instance', stoppedAt: null });
    expect(isAlive(agent, now)).toBe(true);
  });

  /**
   * A pool whose next lookup of the holder (findAgent) first runs `before` (a transient error
   * thrown, or the row deleted in between), as a flaky network or an operator would.
   */
  function poolWithHolderLookup(before: () => Promise<void>): Pool {
    const p = createPool(TEST_DATABASE_URL, 2);
    const query = p.query.bind(p) as (text: string, values?: unknown[]) => Promise<unknown>;
    let armed = true;
    p.query = (async (text: string, values?: unknown[]) => {
      if (armed && typeof text === 'string' && text.includes('LEFT JOIN (SELECT')) {
        armed = false;
        await before();
      }
      return query(text, values);
    }) as unknown as typeof p.query;
    return p;
  }

  it('a heartbeat that finds its id taken but cannot look up the holder (a transient error) tries again at the next one, and then tells its caller', async () => {
    const id = uniqueAgentId('flaky');
    const flaky = poolWithHolderLookup(async () => {
      throw new Error('connection reset');
    });
    try {
      let noticed: (holder: Agent) => void = () => {};
      const superseded = new Promise<Agent>((resolve) => (noticed = resolve));
      const logs: string[] = [];
      const mine = await startAgentPresence(flaky, { id, version: 'test', host: 'host-a', intervalMs: 50, onSuperseded: (holder) => noticed(holder), log: (l) => logs.push(l) });
      running.push(mine);
      await registerAgent(pool, { id, host: 'host-b', version: 'test', heartbeatIntervalMs: 60_000, instance: 'other-instance' });
      expect(await superseded).toMatchObject({ host: 'host-b', instance: 'other-instance' });
      expect(logs.some((l) => /heartbeat failed: connection reset/.test(l))).toBe(true);
    } finally {
      for (const p of running.splice(0)) await p.stop().catch(() => {});
      await flaky.end();
    }
  });

  it('a heartbeat that finds its id taken, whose holder is then deleted before it is looked up, registers again instead of going silent', async () => {
    const id = uniqueAgentId('vanished');
    const racy = poolWithHolderLookup(async () => {
      await pool.query('DELETE FROM filestore.agents WHERE id = $1', [id]);
    });
    try {
      const superseded: Agent[] = [];
      const mine = await startAgentPresence(racy, { id, version: 'test', host: 'host-a', intervalMs: 50, onSuperseded: (holder) => superseded.push(holder) });
      running.push(mine);
      await registerAgent(pool, { id, host: 'host-b', version: 'test', heartbeatIntervalMs: 60_000, instance: 'other-instance' });
      // The id is free again: this instance holds it and heartbeats.
      for (let i = 0; ; i++) {
        const { agent, now } = await findAgent(pool, id);
        if (agent?.instance === mine.instance && isAlive(agent, now)) break;
        if (i > 300) throw new Error(`the id was not registered again: ${JSON.stringify(agent)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(superseded).toEqual([]);
    } finally {
      for (const p of running.splice(0)) await p.stop().catch(() => {});
      await racy.end();
    }
  });

  it('a clean stop frees the id at once: the next agent takes it without waiting for a lease', async () => {
    const id = uniqueAgentId('clean');
    const first = await presence({ id, version: 'test', host: 'host-a', intervalMs: 60_000 });
    await first.stop();
    await presence({ id, version: 'test', host: 'host-b', intervalMs: 60_000, leaseMs: 600_000 });
    expect((await row(id)).agent).toMatchObject({ host: 'host-b', stoppedAt: null });
  });
});
