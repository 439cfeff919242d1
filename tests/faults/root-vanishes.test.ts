/**
 * Fault: a local mount's root vanishes under a running agent (a disk unmounted, a directory
 * renamed away, replaced by a symlink) and comes back, changed meanwhile. The agent marks the
 * mount unhealthy while it is gone, refuses commands without leaving them pending, and once
 * the root is back watches it again and rescans: catalogue = disk, nothing pending, staging
 * empty, the mount healthy, without anyone asking.
 */
import { mkdir, mkdtemp, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createAgentMount,
  eventually,
  killAgents,
  spawnAgent,
  startDeployment,
  stopAgent,
  uniqueAgentId,
  type AgentMount,
  type AgentProcess,
  type Deployment,
} from '../support/agent-process.ts';
import { expectSettled, faultCases } from './support.ts';

let d: Deployment;
beforeAll(async () => {
  d = await startDeployment();
});
afterAll(async () => {
  await killAgents();
  await d?.close();
});

const health = async (m: AgentMount) =>
  (await d.pool.query<{ health: string; reason: string | null }>('SELECT health, health_reason AS reason FROM filestore.mounts WHERE id = $1', [m.mount.id])).rows[0];

/** expectSettled, once the agent has caught up. */
async function settles(m: AgentMount, agent: AgentProcess): Promise<void> {
  // expectSettled throws until it holds; eventually reports its last failure.
  await eventually(async () => {
    await expectSettled(d.pool, m.mount.id, m.root);
    return true;
  }, 'catalogue = disk, nothing pending, staging empty', 60_000, agent);
}

interface Case {
  name: string;
  /** Takes the root away; returns how to bring it back. */
  away(m: AgentMount): Promise<() => Promise<void>>;
}

const cases: Case[] = [
  {
    name: 'renamed away and back, changed meanwhile',
    async away(m) {
      await rename(m.root, `${m.root}.away`);
      return async () => {
        await writeFile(path.join(`${m.root}.away`, 'docs', 'added-while-away.txt'), 'new');
        await unlink(path.join(`${m.root}.away`, 'docs', 'f1.txt'));
        await rename(`${m.root}.away`, m.root);
      };
    },
  },
  {
    name: 'replaced by a symlink to another tree, then restored',
    async away(m) {
      const elsewhere = await mkdtemp(path.join(os.tmpdir(), 'filestore-elsewhere-'));
      await writeFile(path.join(elsewhere, 'not-yours.txt'), 'outside');
      await rename(m.root, `${m.root}.away`);
      await symlink(elsewhere, m.root);
      return async () => {
        await unlink(m.root);
        await rename(`${m.root}.away`, m.root);
        await rm(elsewhere, { recursive: true, force: true });
      };
    },
  },
];

describe('a mount root that vanishes and returns', () => {
  it.each(faultCases(cases))('$name: unhealthy while gone, then watched, rescanned, healthy; catalogue = disk', { timeout: 180_000 }, async (c) => {
    const agentId = uniqueAgentId('root');
    const m = await createAgentMount(d, agentId);
    try {
      await mkdir(m.abs('docs'));
      for (let i = 0; i < 8; i++) await writeFile(m.abs(`docs/f${i}.txt`), `file ${i}`);
      const agent = spawnAgent(d, agentId);
      await agent.ready;
      await settles(m, agent);

      const back = await c.away(m);
      await eventually(async () => ((await health(m))?.health === 'unhealthy' ? true : undefined), 'the mount to be unhealthy', 30_000, agent);
      // A command while the root is gone fails, journaled; nothing is left pending.
      const put = await agent.call('PUT', `/v1/files?${new URLSearchParams({ mountId: m.mount.key, path: 'docs/during.txt' })}`, { body: 'x' });
      expect(put.status).toBeGreaterThanOrEqual(400);

      await back();
      await eventually(async () => ((await health(m))?.health === 'healthy' ? true : undefined), 'the mount to be healthy again', 60_000, agent);
      // Changes made directly in the root after it came back are followed too.
      await writeFile(m.abs('top-level-after.txt'), 'seen');
      await settles(m, agent);
      const { rows } = await d.pool.query(`SELECT 1 FROM filestore.nodes WHERE mount_id = $1 AND path = 'top-level-after.txt' AND deleted_at IS NULL`, [m.mount.id]);
      expect(rows).toHaveLength(1);
      await stopAgent(agent);
    } finally {
      await killAgents();
      await rm(`${m.root}.away`, { recursive: true, force: true });
      await m.cleanup();
    }
  });
});
