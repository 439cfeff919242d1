/**
 * Fault: the disk of a local mount is full when a small body — held whole in memory and written
 * with synchronous calls (local-executor.ts writeWhole) — is written. As for a streamed body
 * (disk-full.test.ts): 507 INSUFFICIENT_STORAGE, journaled failed, an overwritten file kept as
 * it was, nothing pending, staging empty, catalogue = disk.
 */
import { execFileSync } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMount } from '../../shared/catalogue/mounts.ts';
import type { Filestore } from '../../shared/runtime.ts';
import { startFilestore, uniqueKey } from '../support/filestore.ts';
import { expectSettled, faultCases } from './support.ts';

const root = path.join(os.tmpdir(), `filestore-full-whole-${process.pid}`);
let canMount = false;
let core: Filestore;

beforeAll(async () => {
  core = await startFilestore({ redisUrl: 'inline', recover: false });
  try {
    execFileSync('mkdir', ['-p', root]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k,nr_inodes=200', 'tmpfs', root], { stdio: 'ignore' });
    canMount = true;
  } catch {
    // Not root, or no tmpfs here: the cases are skipped.
  }
});
afterAll(async () => {
  await core.close();
  if (canMount) execFileSync('umount', [root]);
  await rm(root, { recursive: true, force: true });
});

interface Case {
  name: string;
  run(mountId: string): Promise<void>;
}

const failsFull = async (p: Promise<unknown>) => {
  const err = await p.then(() => null, (e: unknown) => e as { code?: string; status?: number });
  expect(err).toMatchObject({ code: 'INSUFFICIENT_STORAGE', status: 507 });
};

const cases: Case[] = [
  {
    name: 'a new small file that does not fit',
    run: (mountId) => failsFull(core.orchestrator.writeFile(mountId, { path: 'd/new.bin' }, Buffer.alloc(60 * 1024, 1))),
  },
  {
    name: 'a small overwrite that does not fit keeps the old file',
    async run(mountId) {
      const before = await readFile(path.join(root, 'd', 'keep.bin'));
      await failsFull(core.orchestrator.writeFile(mountId, { path: 'd/keep.bin' }, Buffer.alloc(60 * 1024, 2)));
      expect(await readFile(path.join(root, 'd', 'keep.bin'))).toEqual(before);
    },
  },
];

describe('a full disk, small bodies', () => {
  it.each(faultCases(cases))('$name: 507, journaled, catalogue = disk, nothing pending, staging empty', { timeout: 60_000 }, async (c) => {
    if (!canMount) return;
    execFileSync('sh', ['-c', `rm -rf ${JSON.stringify(root)}/* ${JSON.stringify(root)}/.[!.]*`]);
    const mount = await createMount(core.pool, { key: uniqueKey('fullwhole'), kind: 'local', rootPath: root });
    await core.orchestrator.writeFile(mount.id, { path: 'd/keep.bin' }, Buffer.alloc(1024, 7));
    // Fill the disk (a streamed write, catalogued) until less than a small body's room is left.
    for (let i = 0; ; i++) {
      const r = await core.orchestrator.writeFile(mount.id, { path: `fill/${i}` }, Readable.from([Buffer.alloc(48 * 1024, 3)])).then(
        () => true,
        (e: { code?: string }) => (e.code === 'INSUFFICIENT_STORAGE' ? false : Promise.reject(e)),
      );
      if (!r) break;
    }
    await c.run(mount.id);
    const { rows } = await core.pool.query<{ status: string; code: string }>(
      `SELECT status, error->>'code' AS code FROM filestore.journal_entries WHERE mount_id = $1 ORDER BY id DESC LIMIT 1`,
      [mount.id],
    );
    expect(rows[0]).toEqual({ status: 'failed', code: 'INSUFFICIENT_STORAGE' });
    await expectSettled(core.pool, mount.id, root);
    // With room again, the same mount takes a small write.
    await core.orchestrator.delete(mount.id, { path: 'fill', recursive: true });
    await core.orchestrator.writeFile(mount.id, { path: 'd/after.bin' }, Buffer.from('room again'));
    await expectSettled(core.pool, mount.id, root);
  });
});
