/**
 * Fault: the process running a command is killed (SIGKILL) before, during or after its
 * storage step, for uploads, moves, copies and deletes; recovery alone must leave catalogue,
 * disk, journal and staging in agreement.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Filestore } from '../../shared/runtime.ts';
import { expectExactRollups } from '../support/assertions.ts';
import { crashIn } from '../support/crash.ts';
import { createTestMount, startFilestore } from '../support/filestore.ts';
import { expectSettled, faultCases, recoverMount } from './support.ts';

type Step = 'before-storage' | 'during-storage' | 'after-storage';
interface Case {
  name: string;
  step: Step;
  command: { name: string; input: Record<string, unknown>; content?: string; sizeBytes?: number };
}

const commands: Array<Omit<Case, 'step'>> = [
  { name: 'cp -r', command: { name: 'copy', input: { path: 'tree', targetPath: 'tree-copy' } } },
  { name: 'put (over an existing file)', command: { name: 'writeFile', input: { path: 'put/target.txt' }, sizeBytes: 16 * 1024 * 1024 } },
  { name: 'mv (a tree over a tree)', command: { name: 'move', input: { path: 'tree', targetPath: 'old', overwrite: true } } },
  { name: 'rm -r', command: { name: 'delete', input: { path: 'tree', recursive: true } } },
];
const steps: Step[] = ['during-storage', 'before-storage', 'after-storage'];
const cases: Case[] = steps.flatMap((step) => commands.map((c) => ({ ...c, step })));

let core: Filestore;
beforeAll(async () => {
  core = await startFilestore({ redisUrl: 'inline', recover: false });
});
afterAll(async () => {
  await core.close();
});

describe('kill -9 at each step of put, mv, cp and rm', () => {
  it.each(faultCases(cases))('$name killed $step: recovery leaves catalogue = disk, nothing pending, staging empty', { timeout: 120_000 }, async (c) => {
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    try {
      // A tree big enough that a copy or removal is caught half way, an old target tree, a file to overwrite.
      for (let i = 0; i < 150; i++) {
        await mkdir(path.join(root, 'tree', `d${i % 6}`), { recursive: true });
        await writeFile(path.join(root, 'tree', `d${i % 6}`, `f${i}.bin`), Buffer.alloc(1024 + i, i % 251));
      }
      await mkdir(path.join(root, 'old', 'inner'), { recursive: true });
      await writeFile(path.join(root, 'old', 'inner', 'keep.txt'), 'old tree');
      await mkdir(path.join(root, 'put'));
      await core.orchestrator.writeFile(t.mount.key, { path: 'put/target.txt' }, Readable.from([Buffer.from('the original bytes')]));
      const { job } = await core.reconcile.enqueue({ mountId: t.mount.id, path: '', reason: 'manual', recursive: true, hash: false });
      await waitForJob(core, job.id);
      await expectSettled(core.pool, t.mount.id, root);

      const ended = await crashIn(c.step, t.mount.key, c.command);
      expect(ended).toBe('SIGKILL');
      const pending = await core.pool.query('SELECT 1 FROM filestore.journal_entries WHERE mount_id = $1 AND status = $2', [t.mount.id, 'pending']);
      expect(pending.rowCount).toBe(1);

      await recoverMount(core, t.mount.id);
      await expectSettled(core.pool, t.mount.id, root);
      await expectExactRollups(core, t.mount.id);
    } finally {
      await t.cleanup();
    }
  });
});

async function waitForJob(core: Filestore, id: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const { rows } = await core.pool.query<{ status: string; error: unknown }>('SELECT status, error FROM filestore.reconciliation_jobs WHERE id = $1', [id]);
    if (rows[0]?.status === 'succeeded') return;
    if (rows[0]?.status === 'failed') throw new Error(`job ${id} failed: ${JSON.stringify(rows[0].error)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`job ${id} did not finish`);
}
