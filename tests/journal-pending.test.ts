/**
 * Issue 16, item 2: a command that never touched storage is journaled `failed` at once (an S3
 * mount without credentials, a local mount whose root never existed), never left `pending`.
 */
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Filestore } from '../shared/runtime.ts';
import { sharedS3, startFilestore, stopS3, uniqueKey } from './support/filestore.ts';

let core: Filestore;
const logged: string[] = [];
beforeAll(async () => {
  // No S3 credentials anywhere: none configured, none in the environment.
  for (const v of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_PROFILE', 'AWS_SESSION_TOKEN']) delete process.env[v];
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  process.env.AWS_SHARED_CREDENTIALS_FILE = path.join(os.tmpdir(), 'filestore-no-such-credentials');
  process.env.AWS_CONFIG_FILE = path.join(os.tmpdir(), 'filestore-no-such-config');
  core = await startFilestore({ redisUrl: 'inline', s3: {}, log: (line) => logged.push(line) });
});
afterAll(async () => {
  await core?.close();
  await stopS3();
});

const entries = async (mountId: string) =>
  (await core.pool.query<{ command: string; status: string; code: string | null }>(
    `SELECT command, status, error->>'code' AS code FROM filestore.journal_entries WHERE mount_id = $1 ORDER BY id`,
    [mountId],
  )).rows;

it('an S3 mount without credentials: put and mkdir fail at once, their entries failed with the code, none pending', async () => {
  const s3 = await sharedS3();
  const bucket = await s3.createBucket();
  const mount = await createMount(core.pool, { key: uniqueKey('nocreds'), kind: 's3', bucket, endpoint: s3.endpoint, region: 'us-east-1' });
  await expect(core.orchestrator.writeFile(mount.id, { path: 'a.txt' }, Readable.from([Buffer.from('a')]))).rejects.toMatchObject({ code: 'UNAVAILABLE', status: 503 });
  await expect(core.orchestrator.mkdir(mount.id, { path: 'd' })).rejects.toMatchObject({ code: 'UNAVAILABLE', status: 503 });
  expect(await entries(mount.id)).toEqual([
    { command: 'writeFile', status: 'failed', code: 'UNAVAILABLE' },
    { command: 'mkdir', status: 'failed', code: 'UNAVAILABLE' },
  ]);
});

it('a local mount whose root never existed: put and mkdir fail at once, entries failed, none pending', async () => {
  const root = path.join(os.tmpdir(), `filestore-never-${uniqueKey()}`);
  const mount = await createMount(core.pool, { key: uniqueKey('never'), kind: 'local', rootPath: root });
  await expect(core.orchestrator.writeFile(mount.id, { path: 'a.txt' }, Readable.from([Buffer.from('a')]))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  await expect(core.orchestrator.mkdir(mount.id, { path: 'd', parents: true })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  expect(await entries(mount.id)).toEqual([
    { command: 'writeFile', status: 'failed', code: 'UNAVAILABLE' },
    { command: 'mkdir', status: 'failed', code: 'UNAVAILABLE' },
  ]);
});

it("recovery's log names the entries it could not resolve: ids, command, path and mount, with the reason", async () => {
  const s3 = await sharedS3();
  const bucket = await s3.createBucket();
  const mount = await createMount(core.pool, { key: uniqueKey('stuck'), kind: 's3', bucket, endpoint: s3.endpoint, region: 'us-east-1' });
  // What a process that died after journaling (before its storage call) leaves behind.
  const { rows } = await core.pool.query<{ id: string }>(
    `INSERT INTO filestore.journal_entries (mount_id, command, request) VALUES ($1, 'writeFile', '{"path":"docs/a.txt"}'), ($1, 'move', '{"path":"x","targetPath":"y"}') RETURNING id`,
    [mount.id],
  );
  const [a, b] = rows.map((r) => Number(r.id));
  logged.length = 0;
  const report = await core.maintain();
  expect(report.recovery?.error).toBeGreaterThanOrEqual(2);
  const line = logged.find((l) => l.startsWith('recovery:')) ?? '';
  expect(line).toContain(`mount ${mount.key} (UNAVAILABLE: S3 mount of bucket "${bucket}" has no credentials`);
  expect(line).toContain(`entry ${a} writeFile "docs/a.txt"`);
  expect(line).toContain(`entry ${b} move "x" -> "y"`);
  expect(line).toContain('filestore journal --pending');
  await core.pool.query(`UPDATE filestore.journal_entries SET status = 'failed' WHERE id = ANY($1::bigint[])`, [[a, b]]);
});
