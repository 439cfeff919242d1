import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdir, rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventEnvelope } from '../shared/catalogue/outbox.ts';
import type { CatalogueNode } from '../shared/catalogue/types.ts';
import {
  createAgentMount,
  eventPath,
  eventually,
  killAgents,
  spawnAgent,
  startDeployment,
  stopAgent,
  subscribeEvents,
  uniqueAgentId,
  type AgentMount,
  type AgentProcess,
  type Deployment,
  type RedisEvents,
} from './support/agent-process.ts';

// A real `filestore agent` process with watchers on (debounce 50 ms) over a local mount it
// owns: changes made on its disk by someone else converge into the catalogue, and the
// drift, reconciled and missing events reach the Redis channel `filestore:events`.

let d: Deployment;
let events: RedisEvents;
const mounts: AgentMount[] = [];

beforeAll(async () => {
  d = await startDeployment();
  events = await subscribeEvents(() => mounts.map((t) => t.mount.id));
});

afterAll(async () => {
  await killAgents();
  await events?.close();
  for (const t of mounts) await t.cleanup();
  await d?.close();
});

/** No reconcile job of the mount is queued or running (the catch-up rescan, the jobs of a drift). */
const jobsIdle = async (mountId: string) => {
  const { rows } = await d.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND status IN ('queued', 'running')`, [mountId]);
  return rows[0]?.n === 0 ? true : undefined;
};

const FILES = 10_000;

// FILESTORE_WATCH_BACKEND: chokidar (what `auto` picks for trees this small) and parcel.
describe.each(['chokidar', 'parcel'] as const)('an agent watching its mounts with %s', (backend) => {
  const agentId = uniqueAgentId(`watch-${backend}`);
  let agent: AgentProcess;
  let m: AgentMount;
  let burst: AgentMount;

  const activeNode = (t: AgentMount, p: string, check: (n: CatalogueNode) => boolean = () => true) =>
    eventually(async () => {
      const n = await t.node(p);
      return n && n.consistencyState === 'ACTIVE' && check(n) ? n : undefined;
    }, `${p} ACTIVE in the catalogue`, 45_000, agent);

  /** A file written outside Filestore and waited for until catalogued (the baseline of a test). */
  async function catalogued(p: string, content: string): Promise<CatalogueNode> {
    await mkdir(path.dirname(m.abs(p)), { recursive: true });
    await writeFile(m.abs(p), content);
    const node = await activeNode(m, p, (n) => n.sizeBytes === Buffer.byteLength(content));
    await eventually(() => jobsIdle(m.mount.id), 'the reconcile jobs of the baseline', 45_000, agent);
    return node;
  }

  const ofPath = (type: string, p: string) => events.of(m.mount.id, type).filter((e) => eventPath(e) === p);
  /** An event of this suite's mount (the other suite's mount has the same paths). */
  const waitFor = (match: (e: EventEnvelope) => boolean, what: string) => events.waitFor((e) => e.mountId === m.mount.id && match(e), what);

  beforeAll(async () => {
    m = await createAgentMount(d, agentId);
    burst = await createAgentMount(d, agentId);
    mounts.push(m, burst);
    agent = spawnAgent(d, agentId, { FILESTORE_WATCH_BACKEND: backend });
    await agent.ready;
    await agent.line(new RegExp(`^watcher ${m.mount.key}: ${backend} `));
    // The catch-up rescan of each mount (an audit at start) is over: what follows is seen by the watchers alone.
    for (const t of [m, burst]) await eventually(() => jobsIdle(t.mount.id), `the catch-up rescan of ${t.mount.key}`, 45_000, agent);
  });

  afterAll(async () => {
    if (agent) await stopAgent(agent, 'SIGTERM', 10_000);
  });

  describe('out-of-band changes in a mount the agent watches', () => {
    it('a file created outside Filestore is catalogued; filestore.drift.detected and filestore.node.reconciled are published', async () => {
      await mkdir(m.abs('new'));
      await writeFile(m.abs('new/hello.txt'), 'hello');
      const node = await activeNode(m, 'new/hello.txt', (n) => n.sizeBytes === 5);
      expect(node).toMatchObject({ kind: 'file', sizeBytes: 5 });
      expect((await m.node('new'))?.kind).toBe('directory');
      // One untracked signal: the new directory (covering what is inside), or the file itself.
      const drift = await waitFor(
        (e) => e.mountId === m.mount.id && e.type === 'filestore.drift.detected' && ['new', 'new/hello.txt'].includes(eventPath(e) ?? ''),
        'drift.detected for new/',
      );
      expect(drift.data).toMatchObject({ nodeId: null, reason: 'watcher' });
      const reconciled = await waitFor(
        (e) => e.mountId === m.mount.id && e.type === 'filestore.node.reconciled' && eventPath(e) === 'new/hello.txt',
        'node.reconciled for new/hello.txt',
      );
      expect(reconciled.data).toMatchObject({ change: 'discovered', node: { id: node.id, kind: 'file', sizeBytes: 5 } });
    });

    it('a file modified outside Filestore goes INCONSISTENT and is reconciled to what the disk holds, as a new version of the same node', async () => {
      const before = await catalogued('mod/report.csv', 'a,b\n');
      await writeFile(m.abs('mod/report.csv'), 'a,b\n1,2\n');
      const after = await activeNode(m, 'mod/report.csv', (n) => n.sizeBytes === 8);
      expect(after).toMatchObject({ id: before.id, version: before.version + 1 });
      expect(after.lastDriftDetectedAt).not.toBeNull();
      const drift = await waitFor(
        (e) => e.type === 'filestore.drift.detected' && e.data.nodeId === before.id,
        'drift.detected for mod/report.csv',
      );
      expect(drift).toMatchObject({ mountId: m.mount.id, data: { path: 'mod/report.csv', reason: 'watcher', observed: { sizeBytes: 8 } } });
      const reconciled = await waitFor(
        (e) => e.type === 'filestore.node.reconciled' && (e.data.node as { id?: number }).id === before.id && (e.data.node as { version: number }).version === before.version + 1,
        'node.reconciled for mod/report.csv',
      );
      expect(reconciled.data).toMatchObject({ change: 'updated', node: { path: 'mod/report.csv', sizeBytes: 8, consistencyState: 'ACTIVE' } });
      // Published in the order they happened.
      expect(reconciled.seq).toBeGreaterThan(drift.seq);
    });

    it('a file deleted outside Filestore becomes MISSING; filestore.node.missing is published', async () => {
      const before = await catalogued('del/old.log', 'bye');
      await unlink(m.abs('del/old.log'));
      const missing = await eventually(async () => {
        const n = await m.node('del/old.log');
        return n?.consistencyState === 'MISSING' ? n : undefined;
      }, 'del/old.log MISSING', 45_000, agent);
      expect(missing.id).toBe(before.id);
      await waitFor((e) => e.type === 'filestore.drift.detected' && e.data.nodeId === before.id, 'drift.detected for del/old.log');
      const gone = await waitFor((e) => e.type === 'filestore.node.missing' && (e.data.node as { id?: number }).id === before.id, 'node.missing for del/old.log');
      expect(gone).toMatchObject({ mountId: m.mount.id, data: { node: { path: 'del/old.log', consistencyState: 'MISSING' } } });
    });

    it('a rename outside Filestore: the old path becomes MISSING, the new one is catalogued', async () => {
      const before = await catalogued('ren/a.txt', 'alpha');
      await rename(m.abs('ren/a.txt'), m.abs('ren/b.txt'));
      const b = await activeNode(m, 'ren/b.txt', (n) => n.sizeBytes === 5);
      await eventually(async () => ((await m.node('ren/a.txt'))?.consistencyState === 'MISSING' ? true : undefined), 'ren/a.txt MISSING', 45_000, agent);
      await waitFor((e) => e.type === 'filestore.node.missing' && (e.data.node as { id?: number }).id === before.id, 'node.missing for ren/a.txt');
      const found = await waitFor((e) => e.type === 'filestore.node.reconciled' && eventPath(e) === 'ren/b.txt', 'node.reconciled for ren/b.txt');
      expect(found.data).toMatchObject({ change: 'discovered', node: { id: b.id } });
    });

    it("an editor's atomic save (temp file renamed over the target) is one drift of the same node, never a delete plus a create", async () => {
      const before = await catalogued('edit/doc.txt', 'version one');
      const { rows: mark } = await d.pool.query<{ id: number | null }>('SELECT max(id)::int AS id FROM filestore.outbox');
      const temp = 'edit/.doc.txt.swp-4913';
      await writeFile(m.abs(temp), 'version two, longer');
      await rename(m.abs(temp), m.abs('edit/doc.txt'));
      const after = await activeNode(m, 'edit/doc.txt', (n) => n.sizeBytes === 19);
      expect(after).toMatchObject({ id: before.id, version: before.version + 1 });
      await waitFor(
        (e) => e.type === 'filestore.node.reconciled' && (e.data.node as { id?: number; version?: number }).id === before.id && (e.data.node as { version: number }).version === before.version + 1,
        'node.reconciled for edit/doc.txt',
      );
      await eventually(() => jobsIdle(m.mount.id), 'the reconcile jobs of the save', 45_000, agent);
      // Events are published in order: everything the save caused came before that reconciled event.
      expect(ofPath('filestore.drift.detected', 'edit/doc.txt').filter((e) => e.data.nodeId === before.id)).toHaveLength(1);
      expect(ofPath('filestore.node.missing', 'edit/doc.txt')).toEqual([]);
      expect(events.of(m.mount.id).filter((e) => eventPath(e) === temp)).toEqual([]);
      expect(await m.node(temp)).toBeNull();
      // The outbox (every event the catalogue wrote) says the same.
      const { rows } = await d.pool.query<{ type: string; n: number }>(
        `SELECT type, count(*)::int AS n FROM filestore.outbox WHERE mount_id = $1 AND (data->>'path' IN ($2, $3) OR data->'node'->>'path' IN ($2, $3)) AND id > $4 GROUP BY type ORDER BY type`,
        [m.mount.id, 'edit/doc.txt', temp, mark[0]?.id ?? 0],
      );
      expect(rows).toEqual([
        { type: 'filestore.drift.detected', n: 1 },
        { type: 'filestore.node.reconciled', n: 1 },
      ]);
    });

    it('a save that moves the original aside first (backup, write anew, drop the backup) is one drift of the same node too', async () => {
      const before = await catalogued('vim/notes.md', '# notes\n');
      await rename(m.abs('vim/notes.md'), m.abs('vim/notes.md~'));
      await writeFile(m.abs('vim/notes.md'), '# notes\n\nmore\n');
      await unlink(m.abs('vim/notes.md~'));
      const after = await activeNode(m, 'vim/notes.md', (n) => n.sizeBytes === 14);
      expect(after).toMatchObject({ id: before.id, version: before.version + 1 });
      await waitFor(
        (e) => e.type === 'filestore.node.reconciled' && (e.data.node as { id?: number }).id === before.id && (e.data.node as { version: number }).version === before.version + 1,
        'node.reconciled for vim/notes.md',
      );
      await eventually(() => jobsIdle(m.mount.id), 'the reconcile jobs of the save', 45_000, agent);
      expect(ofPath('filestore.drift.detected', 'vim/notes.md').filter((e) => e.data.nodeId === before.id)).toHaveLength(1);
      expect(ofPath('filestore.node.missing', 'vim/notes.md')).toEqual([]);
      expect(await m.node('vim/notes.md~')).toBeNull();
    });
  });

  it(`a burst of ${FILES.toLocaleString('en')} files written outside Filestore is all catalogued, with a handful of reconcile jobs`, { timeout: 80_000 }, async () => {
    mkdirSync(burst.abs('tracked'));
    await activeNode(burst, 'tracked');
    await eventually(() => jobsIdle(burst.mount.id), 'the jobs of tracked/', 45_000, agent);
    // A fresh database has no statistics yet: without them, the planner filters paths instead
    // of seeking them once the nodes table grows by thousands of rows (autovacuum would
    // analyze in production; test servers may run without it).
    const analyze = setInterval(() => void d.pool.query('ANALYZE filestore.nodes').catch(() => {}), 2_000);
    try {
      mkdirSync(burst.abs('fresh'));
      for (let i = 0; i < FILES; i++) writeFileSync(burst.abs(`${i % 2 === 0 ? 'tracked' : 'fresh'}/f-${String(i).padStart(5, '0')}.dat`), String(i));
      const liveFiles = async () => {
        const { rows } = await d.pool.query<{ dir: string; n: number }>(
          `SELECT split_part(path, '/', 1) AS dir, count(*)::int AS n FROM filestore.nodes
            WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'file' AND consistency_state = 'ACTIVE' GROUP BY 1`,
          [burst.mount.id],
        );
        return Object.fromEntries(rows.map((r) => [r.dir, r.n]));
      };
      await eventually(
        async () => {
          const n = await liveFiles();
          return n.tracked === FILES / 2 && n.fresh === FILES / 2 ? n : undefined;
        },
        'every file of the burst catalogued',
        70_000,
        agent,
      );
      // The burst did not flood the queue: jobs per directory, joined while waiting.
      const { rows } = await d.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.reconciliation_jobs WHERE mount_id = $1`, [burst.mount.id]);
      expect(rows[0]?.n).toBeLessThan(100);
    } finally {
      clearInterval(analyze);
    }
  });
});
