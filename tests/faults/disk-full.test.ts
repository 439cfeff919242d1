/**
 * Fault: the disk of a local mount fills up (a small tmpfs as the mount's root) in the middle
 * of a command. The command fails with 507 INSUFFICIENT_STORAGE, journaled, and leaves
 * nothing behind: the catalogue is what the disk holds, no entry is pending, staging is empty.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMount } from '../../shared/catalogue/mounts.ts';
import type { Filestore } from '../../shared/runtime.ts';
import { startFilestore, uniqueKey } from '../support/filestore.ts';
import { expectSettled, faultCases } from './support.ts';

const root = path.join(os.tmpdir(), `filestore-full-battery-${process.pid}`);
let canMount = false;
let core: Filestore;

beforeAll(async () => {
  core = await startFilestore({ redisUrl: 'inline', recover: false });
  try {
    execFileSync('mkdir', ['-p', root]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,nr_inodes=2000', 'tmpfs', root], { stdio: 'ignore' });
    canMount = true;
  } catch {
    // Not root, or no tmpfs here: the cases are skipped (tests/errors-truthful.test.ts checks the error mapping).
  }
});
afterAll(async () => {
  await core.close();
  if (canMount) execFileSync('umount', [root]);
  await rm(root, { recursive: true, force: true });
});

async function freshMount() {
  await execFileSync('sh', ['-c', `rm -rf ${JSON.stringify(root)}/* ${JSON.stringify(root)}/.[!.]*`]);
  const mount = await createMount(core.pool, { key: uniqueKey('full'), kind: 'local', rootPath: root });
  for (let i = 0; i < 140; i++) {
    await mkdir(path.join(root, 'tree', `d${i % 5}`), { recursive: true });
    await writeFile(path.join(root, 'tree', `d${i % 5}`, `f${i}`), Buffer.alloc(4096, i));
  }
  const { job } = await core.reconcile.enqueue({ mountId: mount.id, path: '', reason: 'manual', recursive: true, hash: false });
  for (let i = 0; ; i++) {
    const { rows } = await core.pool.query<{ status: string }>('SELECT status FROM filestore.reconciliation_jobs WHERE id = $1', [job.id]);
    if (rows[0]?.status === 'succeeded') break;
    if (i > 300 || rows[0]?.status === 'failed') throw new Error('the audit of the tree did not succeed');
    await new Promise((r) => setTimeout(r, 100));
  }
  return mount;
}

const failsFull = async (p: Promise<unknown>) => {
  const err = await p.then(() => null, (e: unknown) => e as { code?: string; status?: number; message?: string });
  expect(err).toMatchObject({ code: 'INSUFFICIENT_STORAGE', status: 507 });
  expect(err?.message).toMatch(/full/i);
};

interface Case {
  name: string;
  run(mountId: string): Promise<void>;
}

const cases: Case[] = [
  {
    name: 'a tree copy that runs out of space half way',
    async run(mountId) {
      await failsFull(core.orchestrator.copy(mountId, { path: 'tree', targetPath: 'copy' }));
    },
  },
  {
    name: 'an upload bigger than the free space',
    async run(mountId) {
      await failsFull(core.orchestrator.writeFile(mountId, { path: 'big.bin' }, Readable.from([Buffer.alloc(2 * 1024 * 1024, 1)])));
    },
  },
  {
    name: 'an overwrite that does not fit keeps the old file',
    async run(mountId) {
      const before = await readFile(path.join(root, 'tree', 'd0', 'f0'));
      await failsFull(core.orchestrator.writeFile(mountId, { path: 'tree/d0/f0' }, Readable.from([Buffer.alloc(2 * 1024 * 1024, 2)])));
      expect(await readFile(path.join(root, 'tree', 'd0', 'f0'))).toEqual(before);
    },
  },
];

describe('a full disk', () => {
  it.each(faultCases(cases))('$name: 507, journaled, catalogue = disk, nothing pending, staging empty', { timeout: 120_000 }, async (c) => {
    if (!canMount) return;
    const mount = await freshMount();
    await c.run(mount.id);
    const { rows } = await core.pool.query<{ status: string; code: string }>(
      `SELECT status, error->>'code' AS code FROM filestore.journal_entries WHERE mount_id = $1 ORDER BY id DESC LIMIT 1`,
      [mount.id],
    );
    expect(rows[0]).toEqual({ status: 'failed', code: 'INSUFFICIENT_STORAGE' });
    await expectSettled(core.pool, mount.id, root);
    // With room again, the same mount works.
    await core.orchestrator.delete(mount.id, { path: 'tree/d1', recursive: true });
    await core.orchestrator.writeFile(mount.id, { path: 'after.txt' }, Readable.from([Buffer.from('room again')]));
    await expectSettled(core.pool, mount.id, root);
  });
});
