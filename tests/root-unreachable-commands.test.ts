/**
 * A command on a local mount whose root is gone (renamed away, unmounted) is refused before it
 * touches storage: 503 UNAVAILABLE, its journal entry failed at once (nothing left pending for
 * recovery while the root is away), and the same Idempotency-Key runs it once the root is back.
 */
import { mkdtemp, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Filestore } from '../shared/runtime.ts';
import { startFilestore, uniqueKey } from './support/filestore.ts';

let core: Filestore;
let root: string;
beforeAll(async () => {
  core = await startFilestore({ redisUrl: 'inline', recover: false });
  root = await mkdtemp(path.join(os.tmpdir(), 'filestore-gone-'));
});
afterAll(async () => {
  await core.close();
  await rm(root, { recursive: true, force: true });
  await rm(`${root}.away`, { recursive: true, force: true });
});

it('put, mkdir and rm while the root is away are 503, journaled failed at once; the same key succeeds once it is back', async () => {
  const mount = await createMount(core.pool, { key: uniqueKey('gone'), kind: 'local', rootPath: root });
  await core.orchestrator.writeFile(mount.id, { path: 'keep.txt' }, Readable.from([Buffer.from('there')])); // the backend is open
  await rename(root, `${root}.away`);

  const attempts = [
    () => core.orchestrator.writeFile(mount.id, { path: 'new.txt' }, Readable.from([Buffer.from('new')]), { idempotencyKey: 'k-put' }),
    () => core.orchestrator.mkdir(mount.id, { path: 'dir' }, { idempotencyKey: 'k-mkdir' }),
    () => core.orchestrator.delete(mount.id, { path: 'keep.txt' }, { idempotencyKey: 'k-rm' }),
  ];
  for (const attempt of attempts) await expect(attempt()).rejects.toMatchObject({ code: 'UNAVAILABLE', status: 503 });
  const { rows } = await core.pool.query<{ command: string; status: string; code: string | null }>(
    `SELECT command, status, error->>'code' AS code FROM filestore.journal_entries WHERE mount_id = $1 ORDER BY id`,
    [mount.id],
  );
  expect(rows).toEqual([
    { command: 'writeFile', status: 'succeeded', code: null },
    { command: 'writeFile', status: 'failed', code: 'UNAVAILABLE' },
    { command: 'mkdir', status: 'failed', code: 'UNAVAILABLE' },
    { command: 'delete', status: 'failed', code: 'UNAVAILABLE' },
  ]);

  await rename(`${root}.away`, root);
  await core.orchestrator.writeFile(mount.id, { path: 'new.txt' }, Readable.from([Buffer.from('new')]), { idempotencyKey: 'k-put' });
  await core.orchestrator.mkdir(mount.id, { path: 'dir' }, { idempotencyKey: 'k-mkdir' });
  await core.orchestrator.delete(mount.id, { path: 'keep.txt' }, { idempotencyKey: 'k-rm' });
  const after = await core.pool.query<{ path: string }>(
    `SELECT path FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL ORDER BY path COLLATE "C"`,
    [mount.id],
  );
  expect(after.rows.map((r) => r.path)).toEqual(['', 'dir', 'new.txt']);
});
