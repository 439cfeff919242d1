/**
 * Recovery judges a pending entry from storage, so only a process that sees the storage may
 * judge it (hardening finding 2): a local mount's entries by the agent that owns it, never by
 * an API process, a reconcile worker or another agent whose host shows something else at the
 * root's path.
 */
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Filestore } from '../shared/runtime.ts';
import { crashIn } from './support/crash.ts';
import { startFilestore, uniqueKey } from './support/filestore.ts';

describe('recovery of a local mount belongs to the agent that owns it', () => {
  let harness: Filestore;
  let root: string;

  beforeAll(async () => {
    harness = await startFilestore({ redisUrl: 'inline', recover: false });
    root = await mkdtemp(path.join(os.tmpdir(), 'filestore-owned-'));
  });
  afterAll(async () => {
    await harness.close();
    await rm(root, { recursive: true, force: true });
    await rm(`${root}.away`, { recursive: true, force: true });
  });

  it('other processes leave a crashed move of host-b’s mount pending; host-b completes it', { timeout: 120_000 }, async () => {
    const key = uniqueKey('owned');
    const mount = await createMount(harness.pool, { key, kind: 'local', rootPath: root, agentId: 'host-b' });
    await mkdir(path.join(root, 'tree'));
    for (let i = 0; i < 20; i++) await writeFile(path.join(root, 'tree', `f${i}.txt`), `${i}`);
    const jobs = await harness.reconcile.enqueue({ mountId: mount.id, path: '', reason: 'manual', recursive: true, hash: false });
    await waitForJob(harness, jobs.job.id);

    // host-b's process dies after the rename, before the commit.
    await crashIn('after-storage', key, { name: 'move', input: { path: 'tree', targetPath: 'moved' } });
    const pending = await entriesOf(harness, mount.id);
    expect(pending).toEqual([{ command: 'move', status: 'pending' }]);

    // Elsewhere the root's path shows an empty directory (another host, or the disk not mounted there).
    await rename(root, `${root}.away`);
    await mkdir(root);
    for (const identity of [null, undefined, 'host-a'] as const) {
      const other = await startFilestore({ redisUrl: 'inline', recover: false, migrate: false, agentId: identity });
      try {
        const counts = await other.orchestrator.recover();
        expect(counts.elsewhere).toBeGreaterThanOrEqual(1);
      } finally {
        await other.close();
      }
      expect(await entriesOf(harness, mount.id)).toEqual([{ command: 'move', status: 'pending' }]);
    }
    await rm(root, { recursive: true });
    await rename(`${root}.away`, root);

    // The owner sees its disk: the move happened, so it is completed and catalogued.
    const owner = await startFilestore({ redisUrl: 'inline', recover: false, migrate: false, agentId: 'host-b' });
    try {
      const counts = await owner.orchestrator.recover();
      expect(counts.succeeded).toBe(1);
    } finally {
      await owner.close();
    }
    expect(await entriesOf(harness, mount.id)).toEqual([{ command: 'move', status: 'succeeded' }]);
    const live = await harness.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND path LIKE 'moved/%'`,
      [mount.id],
    );
    expect(live.rows[0]?.n).toBe(20);
    expect((await readdir(path.join(root, 'moved'))).length).toBe(20);
  });
});

async function entriesOf(core: Filestore, mountId: string) {
  const { rows } = await core.pool.query<{ command: string; status: string }>(
    'SELECT command, status FROM filestore.journal_entries WHERE mount_id = $1 ORDER BY id',
    [mountId],
  );
  return rows;
}

async function waitForJob(core: Filestore, id: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const { rows } = await core.pool.query<{ status: string }>('SELECT status FROM filestore.reconciliation_jobs WHERE id = $1', [id]);
    if (rows[0]?.status === 'succeeded') return;
    if (rows[0]?.status === 'failed') throw new Error(`job ${id} failed`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${id} did not finish`);
}
