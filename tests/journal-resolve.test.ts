/**
 * Issue 16, item 2: admins list pending journal entries and resolve them, through the API
 * (GET /v1/journal?status=pending, POST /v1/journal/:id/resolve) and the CLI
 * (`filestore journal --pending`, `filestore journal resolve ID`). Resolving looks at storage
 * first: the entry is recorded succeeded when storage shows the command's effect, failed when
 * it does not; nothing is run again.
 */
import { spawn } from 'node:child_process';
import { readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './support/api.ts';
import { crashIn } from './support/crash.ts';
import { createTestMount, type TestMount } from './support/filestore.ts';

const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));
let server: TestServer;
let t: TestMount;

beforeAll(async () => {
  server = await startTestServer();
  t = await createTestMount(server.core, 'local');
});
afterAll(async () => {
  await server?.close();
  await t?.cleanup();
  await rm(`${t?.root}.away`, { recursive: true, force: true });
});

function cli(args: string[], token = server.tokens.admin): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, FILESTORE_URL: server.url, FILESTORE_TOKEN: token }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function call(method: string, p: string, token: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${server.url}${p}`, { method, headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: await res.json() };
}

const pendingIds = async () => (await call('GET', `/v1/journal?status=pending&mountId=${t.mount.key}`, server.tokens.admin)).body.items.map((e: { id: number }) => e.id) as number[];

it('crashed commands are listed as pending (admin, every mount or one), and resolved from what storage shows', async () => {
  // One write reached storage before its process died; one mkdir died before storage.
  expect(await crashIn('after-storage', t.mount.key, { name: 'writeFile', input: { path: 'reports/q1.txt' }, content: 'landed' })).toBe('SIGKILL');
  expect(await crashIn('before-storage', t.mount.key, { name: 'mkdir', input: { path: 'never' } })).toBe('SIGKILL');
  const [written, never] = await pendingIds();
  expect(written).toBeDefined();
  expect(never).toBeDefined();

  const all = await call('GET', '/v1/journal?status=pending', server.tokens.admin);
  expect(all.status).toBe(200);
  expect(all.body.items.map((e: { id: number }) => e.id)).toEqual(expect.arrayContaining([written, never]));
  // Every mount's pending entries are for admins; one mount's for readers; no mount and no status is a mistake.
  expect(await call('GET', '/v1/journal?status=pending', server.tokens.read)).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
  expect((await call('GET', `/v1/journal?status=pending&mountId=${t.mount.key}`, server.tokens.read)).status).toBe(200);
  expect(await call('GET', '/v1/journal', server.tokens.admin)).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION_ERROR' } } });

  // The CLI lists them by mount key, command and path.
  const listed = await cli(['journal', '--pending']);
  expect(listed.stderr).toBe('');
  expect(listed.code).toBe(0);
  expect(listed.stdout).toMatch(new RegExp(`${written}\\s+${t.mount.key}\\s+writeFile reports/q1.txt\\s+pending`));
  expect(listed.stdout).toMatch(new RegExp(`${never}\\s+${t.mount.key}\\s+mkdir never\\s+pending`));
  const asJson = JSON.parse((await cli(['journal', '--pending', '--mount', t.mount.key, '--json'])).stdout) as Array<{ id: number; status: string }>;
  expect(asJson.map((e) => e.id)).toEqual([written, never]);

  // Only an admin resolves.
  expect(await call('POST', `/v1/journal/${written}/resolve`, server.tokens.write)).toMatchObject({ status: 403 });

  // Storage shows the write: completed and catalogued. The mkdir never happened: failed.
  const done = await cli(['journal', 'resolve', String(written)]);
  expect(done.stderr).toBe('');
  expect(done.stdout).toContain(`journal entry ${written} (writeFile reports/q1.txt) completed`);
  const node = await call('GET', `/v1/nodes/by-path?mountId=${t.mount.key}&path=reports/q1.txt`, server.tokens.read);
  expect(node).toMatchObject({ status: 200, body: { kind: 'file', sizeBytes: 6 } });
  expect(await readFile(path.join(t.root as string, 'reports/q1.txt'), 'utf8')).toBe('landed');

  const failed = await call('POST', `/v1/journal/${never}/resolve`, server.tokens.admin);
  expect(failed).toMatchObject({ status: 200, body: { outcome: 'failed', entry: { id: never, status: 'failed', recovered: true, error: { code: 'INTERRUPTED' } } } });
  expect((await call('GET', `/v1/nodes/by-path?mountId=${t.mount.key}&path=never`, server.tokens.read)).status).toBe(404);

  // A final entry is not resolved again; an unknown one is 404.
  expect(await call('POST', `/v1/journal/${never}/resolve`, server.tokens.admin)).toMatchObject({ status: 409, body: { error: { code: 'JOURNAL_ENTRY_NOT_PENDING', details: { status: 'failed' } } } });
  const again = await cli(['journal', 'resolve', String(written)]);
  expect(again.code).toBe(1);
  expect(again.stderr).toContain('(JOURNAL_ENTRY_NOT_PENDING)');
  expect((await call('POST', '/v1/journal/999999999/resolve', server.tokens.admin)).status).toBe(404);
  expect(await pendingIds()).toEqual([]);
  expect((await cli(['journal', '--pending', '--mount', t.mount.key])).stdout).toContain(`no pending journal entries on mount ${t.mount.key}`);
});

it('storage that cannot be read leaves the entry pending (503, the reason); resolved once storage is back', async () => {
  expect(await crashIn('after-storage', t.mount.key, { name: 'mkdir', input: { path: 'later' } })).toBe('SIGKILL');
  const [id] = await pendingIds();
  const root = t.root as string;
  await rename(root, `${root}.away`);
  try {
    const r = await call('POST', `/v1/journal/${id}/resolve`, server.tokens.admin);
    expect(r).toMatchObject({ status: 503, body: { error: { code: 'UNAVAILABLE', details: { journalEntryId: id } } } });
    expect(r.body.error.message).toContain(`journal entry ${id} stays pending`);
    expect(await pendingIds()).toEqual([id]);
  } finally {
    await rename(`${root}.away`, root);
  }
  expect(await call('POST', `/v1/journal/${id}/resolve`, server.tokens.admin)).toMatchObject({ status: 200, body: { outcome: 'succeeded', entry: { status: 'succeeded' } } });
  expect((await call('GET', `/v1/nodes/by-path?mountId=${t.mount.key}&path=later`, server.tokens.read)).body).toMatchObject({ kind: 'directory' });
});
