/**
 * Fault: a second Filestore process starts on a mount while a tree copy on it is under way
 * (an agent started twice by mistake, a container restarted while the old one still runs),
 * or the agent running the copy dies and a new one takes over. The copy either completes
 * with every file or is recorded as failed; never catalogued short.
 */
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STAGING_DIR } from '../../shared/paths.ts';
import {
  awaitSessionsGone,
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

const FILES = 3_000;
let d: Deployment;
beforeAll(async () => {
  d = await startDeployment();
});
afterAll(async () => {
  await killAgents();
  await d?.close();
});

async function treeMount(agentId: string): Promise<AgentMount> {
  const m = await createAgentMount(d, agentId);
  for (let i = 0; i < FILES; i++) {
    if (i % 100 === 0) await mkdir(m.abs(`tree/d${i / 100}`), { recursive: true });
    await writeFile(m.abs(`tree/d${Math.floor(i / 100)}/f${i}.txt`), `file ${i}\n`);
  }
  return m;
}

const catalogued = async (m: AgentMount) => {
  const { rows } = await d.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL`, [m.mount.id]);
  return rows[0]?.n ?? 0;
};
const copyStaged = async (m: AgentMount) => ((await readdir(m.abs(STAGING_DIR)).catch(() => [])).some((n) => n.startsWith('copy.j')) ? true : undefined);

interface Case {
  name: string;
  run(m: AgentMount, agentId: string, first: AgentProcess): Promise<void>;
}

const cases: Case[] = [
  {
    name: 'a second agent with the same id starts mid-copy',
    async run(m, agentId, first) {
      const copying = first.call('POST', '/v1/commands/copy', { json: { mountId: m.mount.key, path: 'tree', targetPath: 'copy' } });
      await eventually(() => copyStaged(m), 'the copy to be built in staging', 60_000, first);
      const second = spawnAgent(d, agentId);
      const ended = await second.exited;
      expect(ended.code).toBe(1);
      expect(second.tail()).toMatch(/AGENT_ID_IN_USE|already running/);
      const res = await copying;
      expect(res.status).toBe(200);
      expect(((await res.json()) as { copiedCount: number }).copiedCount).toBe(FILES + FILES / 100 + 1);
      await stopAgent(first);
    },
  },
  {
    name: 'the agent running the copy is killed and a new one takes over',
    async run(m, agentId, first) {
      const copying = first.call('POST', '/v1/commands/copy', { json: { mountId: m.mount.key, path: 'tree', targetPath: 'copy' } });
      copying.catch(() => {});
      await eventually(() => copyStaged(m), 'the copy to be built in staging', 60_000, first);
      first.child.kill('SIGKILL');
      await first.exited;
      await awaitSessionsGone(d.pool, first.appName);
      const next = spawnAgent(d, agentId);
      await next.ready;
      await eventually(async () => {
        const { rows } = await d.pool.query(`SELECT 1 FROM filestore.journal_entries WHERE mount_id = $1 AND status = 'pending'`, [m.mount.id]);
        return rows.length === 0 ? true : undefined;
      }, 'recovery of the interrupted copy', 60_000, next);
      await stopAgent(next);
    },
  },
];

describe('a second process on a mount while a copy runs', () => {
  it.each(faultCases(cases))('$name: catalogue = disk, nothing pending, staging empty', { timeout: 240_000 }, async (c) => {
    const agentId = uniqueAgentId('second');
    const m = await treeMount(agentId);
    try {
      const first = spawnAgent(d, agentId);
      await first.ready;
      await eventually(async () => ((await catalogued(m)) === FILES + FILES / 100 + 2 ? true : undefined), 'the tree to be catalogued', 120_000, first);
      await c.run(m, agentId, first);
      await expectSettled(d.pool, m.mount.id, m.root);
    } finally {
      await killAgents();
      await m.cleanup();
    }
  });
});
