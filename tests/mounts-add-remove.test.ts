/**
 * Issue 16, item 3: `mounts add` checks what it registers (a root that does not exist, is not a
 * directory, is relative, overlaps another mount of the same agent; an S3 bucket that cannot be
 * listed), `--no-check` skips only reachability, an unhealthy mount says so in `mounts list`,
 * `ls` and `stat`, and `mounts remove` / DELETE /v1/mounts/:id removes a mount from the
 * catalogue (journal kept, storage untouched; refused while a command runs on it).
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './support/api.ts';
import { TEST_DATABASE_URL } from './support/env.ts';
import { sharedS3, stopS3, uniqueKey } from './support/filestore.ts';

const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));
let server: TestServer;
let scratch: string;

beforeAll(async () => {
  server = await startTestServer();
  scratch = await mkdtemp(path.join(os.tmpdir(), 'filestore-mounts-'));
});
afterAll(async () => {
  await server?.close();
  await stopS3();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

function cli(args: string[], token = server.tokens.admin, url = server.url): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: scratch, env: { ...process.env, FILESTORE_URL: url, FILESTORE_TOKEN: token }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function call(method: string, p: string, o: { token?: string; json?: unknown; url?: string } = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(`${o.url ?? server.url}${p}`, {
    method,
    headers: { authorization: `Bearer ${o.token ?? server.tokens.admin}`, ...(o.json === undefined ? {} : { 'content-type': 'application/json' }) },
    body: o.json === undefined ? undefined : JSON.stringify(o.json),
  });
  return { status: res.status, body: await res.json() };
}

const dir = async (name: string) => {
  const d = path.join(scratch, name);
  await mkdir(d, { recursive: true });
  return d;
};

describe('mounts add checks what it registers', () => {
  it('a root that does not exist, is a file or is relative is refused with a clear error; --no-check skips only the existence check', async () => {
    const missing = path.join(scratch, 'not-there');
    const key = uniqueKey('m');
    const r = await cli(['mounts', 'add', 'local', key, '--root', missing]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`--root ${missing} does not exist on this host`);
    expect(r.stderr).toContain('(MOUNT_ROOT_NOT_FOUND)');
    expect((await call('GET', `/v1/mounts/${key}`)).status).toBe(404);

    const file = path.join(scratch, 'a-file');
    await writeFile(file, 'x');
    expect(await call('POST', '/v1/mounts', { json: { kind: 'local', key, rootPath: file } })).toMatchObject({ status: 400, body: { error: { code: 'MOUNT_ROOT_NOT_DIRECTORY' } } });

    const relative = await cli(['mounts', 'add', 'local', key, '--root', 'data']);
    expect(relative.code).toBe(2);
    expect(relative.stderr).toContain('--root must be an absolute path');
    expect(relative.stderr).toContain(path.join(scratch, 'data'));

    const skipped = await cli(['mounts', 'add', 'local', key, '--root', missing, '--no-check', '--json']);
    expect(skipped.stderr).toBe('');
    expect(JSON.parse(skipped.stdout)).toMatchObject({ key, rootPath: missing, health: 'unhealthy' });
    // Registered, but what is known of its root is said wherever it is shown.
    const ls = await cli(['ls', key]);
    expect(ls.stderr).toContain(`mount ${key} is unhealthy: rootPath ${missing} does not exist on this host (registered without the check)`);
    expect(ls.stdout).not.toContain('empty directory');
  });

  it("local mounts on one host (one agent's, or unassigned: run by every agent) may not overlap (inside, around, equal, through a symlink), even with --no-check; another agent may", async () => {
    const outer = await dir('outer');
    const inner = await dir('outer/inner');
    const outerKey = uniqueKey('outer');
    expect((await cli(['mounts', 'add', 'local', outerKey, '--root', outer])).code).toBe(0);

    for (const root of [inner, outer, scratch]) {
      const r = await cli(['mounts', 'add', 'local', uniqueKey('x'), '--root', root, '--no-check']);
      expect(r.code, root).toBe(1);
      expect(r.stderr).toContain('(MOUNT_OVERLAP)');
      if (root !== scratch) expect(r.stderr).toContain(`mount "${outerKey}"`); // scratch holds other mounts' roots too
    }
    const link = path.join(await dir('elsewhere'), 'link');
    await symlink(inner, link);
    expect(await call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('x'), rootPath: link } })).toMatchObject({
      status: 409,
      body: { error: { code: 'MOUNT_OVERLAP', details: { mount: outerKey } } },
    });
    // A mount assigned to an agent runs on that agent's host, where the unassigned outer one runs too.
    expect(await call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('x'), rootPath: inner, agentId: uniqueKey('agent'), check: false } })).toMatchObject({
      status: 409,
      body: { error: { code: 'MOUNT_OVERLAP', details: { mount: outerKey } } },
    });
    // Another agent's disk is another disk: mounts of two different agents may share a path.
    const elsewhere = await dir('other-host');
    const agentA = uniqueKey('agent');
    const agentB = uniqueKey('agent');
    expect((await call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('a'), rootPath: elsewhere, agentId: agentA, check: false } })).status).toBe(201);
    expect((await call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('b'), rootPath: path.join(elsewhere, 'sub'), agentId: agentB, check: false } })).status).toBe(201);
    expect(await call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('c'), rootPath: path.join(elsewhere, 'sub2'), agentId: agentA, check: false } })).toMatchObject({ status: 409, body: { error: { code: 'MOUNT_OVERLAP' } } });
    // An unassigned mount runs on every agent's host: it may not sit in any agent's mount.
    expect(await call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('d'), rootPath: path.join(elsewhere, 'sub3'), check: false } })).toMatchObject({ status: 409, body: { error: { code: 'MOUNT_OVERLAP' } } });
    // The safety rules of a root stay whatever --no-check says.
    expect(await call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('x'), rootPath: '/', check: false } })).toMatchObject({ status: 400, body: { error: { code: 'VALIDATION_ERROR' } } });
  });

  it('two registrations at the same moment with overlapping roots: one is added, the other is 409 MOUNT_OVERLAP', async () => {
    for (let round = 0; round < 5; round++) {
      const outer = await dir(`race-${round}`);
      const inner = await dir(`race-${round}/inner`);
      const answers = await Promise.all([
        call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('ro'), rootPath: outer } }),
        call('POST', '/v1/mounts', { json: { kind: 'local', key: uniqueKey('ri'), rootPath: inner } }),
      ]);
      expect(answers.map((a) => a.status).sort(), `round ${round}`).toEqual([201, 409]);
      expect(answers.find((a) => a.status === 409)).toMatchObject({ body: { error: { code: 'MOUNT_OVERLAP' } } });
    }
  });

  it("giving a local mount to another agent (or to none) is refused when it would overlap that host's mounts", async () => {
    const root = await dir('handover');
    const agentA = uniqueKey('agent');
    const agentB = uniqueKey('agent');
    const a = uniqueKey('ha');
    const b = uniqueKey('hb');
    expect((await call('POST', '/v1/mounts', { json: { kind: 'local', key: a, rootPath: root, agentId: agentA, check: false } })).status).toBe(201);
    expect((await call('POST', '/v1/mounts', { json: { kind: 'local', key: b, rootPath: path.join(root, 'sub'), agentId: agentB, check: false } })).status).toBe(201);
    expect(await call('PATCH', `/v1/mounts/${b}`, { json: { agentId: agentA } })).toMatchObject({ status: 409, body: { error: { code: 'MOUNT_OVERLAP', details: { mount: a } } } });
    expect(await call('PATCH', `/v1/mounts/${b}`, { json: { agentId: null } })).toMatchObject({ status: 409, body: { error: { code: 'MOUNT_OVERLAP' } } });
    expect((await call('GET', `/v1/mounts/${b}`)).body).toMatchObject({ agentId: agentB });
    // Its own root is no overlap: the same agent again, or another change, is accepted.
    expect((await call('PATCH', `/v1/mounts/${b}`, { json: { agentId: agentB, accessMode: 'ro' } })).status).toBe(200);
  });

  it('an S3 bucket that cannot be listed is 422 MOUNT_UNREACHABLE; --no-check registers it; a reachable one is added', async () => {
    const s3 = await sharedS3();
    const bucket = await s3.createBucket();
    const ok = await cli(['mounts', 'add', 's3', uniqueKey('s3'), '--bucket', bucket, '--endpoint', s3.endpoint, '--region', 'us-east-1']);
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);

    const gone = await cli(['mounts', 'add', 's3', uniqueKey('s3'), '--bucket', 'no-such-bucket-here', '--endpoint', s3.endpoint, '--region', 'us-east-1']);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain('s3://no-such-bucket-here/ cannot be reached: the bucket does not exist');
    expect(gone.stderr).toContain('(MOUNT_UNREACHABLE)');
    expect((await cli(['mounts', 'add', 's3', uniqueKey('s3'), '--bucket', 'no-such-bucket-here', '--endpoint', s3.endpoint, '--no-check'])).code).toBe(0);
  });

  it('an S3 mount on a server without credentials is refused, naming the credentials', async () => {
    const saved = { ...process.env };
    for (const v of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_PROFILE', 'AWS_SESSION_TOKEN']) delete process.env[v];
    process.env.AWS_EC2_METADATA_DISABLED = 'true';
    process.env.AWS_SHARED_CREDENTIALS_FILE = path.join(scratch, 'none');
    process.env.AWS_CONFIG_FILE = path.join(scratch, 'none');
    const bare = await startTestServer({ filestore: { s3: {} } });
    try {
      const s3 = await sharedS3();
      const bucket = await s3.createBucket();
      const r = await call('POST', '/v1/mounts', { url: bare.url, token: bare.tokens.admin, json: { kind: 's3', key: uniqueKey('s3'), bucket, endpoint: s3.endpoint } });
      expect(r).toMatchObject({ status: 422, body: { error: { code: 'MOUNT_UNREACHABLE' } } });
      expect(r.body.error.message).toContain('the server has no S3 credentials');
    } finally {
      await bare.close();
      process.env = saved;
    }
  });

  it('an unhealthy mount says so in mounts list, ls and stat, never "is an empty directory"', async () => {
    const root = await dir('sick');
    const key = uniqueKey('sick');
    expect((await cli(['mounts', 'add', 'local', key, '--root', root])).code).toBe(0);
    // What the watcher or a reconciliation records when the root goes.
    await server.core.pool.query(`UPDATE filestore.mounts SET health = 'unhealthy', health_reason = 'the root does not exist (removed, renamed or unmounted?)' WHERE key = $1`, [key]);
    const line = `mount ${key} is unhealthy: the root does not exist (removed, renamed or unmounted?)`;
    const listed = await cli(['mounts']);
    expect(listed.stdout).toMatch(new RegExp(`^${key}\\s+local\\s+\\S+\\s+rw\\s+active\\s+-\\s+unhealthy`, 'm'));
    expect(listed.stdout).toContain(line);
    const ls = await cli(['ls', key]);
    expect(ls.code).toBe(0);
    expect(ls.stderr).toContain(line);
    expect(ls.stdout).not.toContain('empty directory');
    const stat = await cli(['stat', `${key}:`], server.tokens.read);
    expect(stat.stderr).toContain(line);
    expect((await cli(['mounts', 'show', key])).stdout).toMatch(/health\s+unhealthy: the root does not exist/);
  });
});

describe('mounts remove', () => {
  it('drops nodes, snapshots and jobs, keeps the journal and the files; the key and root can be used again', async () => {
    const root = await dir('removed');
    const key = uniqueKey('rm');
    expect((await cli(['mounts', 'add', 'local', key, '--root', root])).code).toBe(0);
    const put = await fetch(`${server.url}/v1/files?mountId=${key}&path=docs/a.txt`, { method: 'PUT', headers: { authorization: `Bearer ${server.tokens.write}` }, body: 'kept' });
    expect(put.status).toBe(200);
    expect((await call('POST', '/v1/reconcile', { token: server.tokens.write, json: { mountId: key } })).status).toBeLessThan(300);
    const { id } = (await call('GET', `/v1/mounts/${key}`)).body as { id: string };

    expect(await call('DELETE', `/v1/mounts/${key}`, { token: server.tokens.write })).toMatchObject({ status: 403 });
    const removed = await cli(['mounts', 'remove', key]);
    expect(removed.stderr).toBe('');
    expect(removed.stdout).toMatch(new RegExp(`removed mount ${key} \\(${root}\\): [1-9]\\d* node\\(s\\) and [1-9]\\d* job\\(s\\) dropped`));

    expect((await call('GET', `/v1/mounts/${key}`)).body).toMatchObject({ error: { code: 'MOUNT_NOT_FOUND' } });
    expect((await cli(['ls', key])).stderr).toContain('(MOUNT_NOT_FOUND)');
    expect(await readFile(path.join(root, 'docs/a.txt'), 'utf8')).toBe('kept');
    const left = await server.core.pool.query<{ nodes: number; jobs: number; journal: number }>(
      `SELECT (SELECT count(*) FROM filestore.nodes WHERE mount_id = $1)::int AS nodes,
              (SELECT count(*) FROM filestore.reconciliation_jobs WHERE mount_id = $1)::int AS jobs,
              (SELECT count(*) FROM filestore.journal_entries WHERE mount_id = $1)::int AS journal`,
      [id],
    );
    expect(left.rows[0]).toEqual({ nodes: 0, jobs: 0, journal: 1 });
    expect((await cli(['mounts', 'add', 'local', key, '--root', root])).code).toBe(0);
  });

  it('is refused with 409 MOUNT_BUSY while a command runs on the mount; a crashed command\'s entry is recorded failed', async () => {
    const root = await dir('busy');
    const key = uniqueKey('busy');
    expect((await cli(['mounts', 'add', 'local', key, '--root', root])).code).toBe(0);
    const { id: mountId } = (await call('GET', `/v1/mounts/${key}`)).body as { id: string };
    const { rows } = await server.core.pool.query<{ id: string }>(`INSERT INTO filestore.journal_entries (mount_id, command, request) VALUES ($1, 'mkdir', '{"path":"d"}') RETURNING id`, [mountId]);
    const entryId = Number(rows[0]?.id);
    // The entry's lock, as the process running the command holds it.
    const owner = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await owner.connect();
    try {
      await owner.query('SELECT pg_advisory_lock(4242, $1::int)', [entryId]);
      const busy = await call('DELETE', `/v1/mounts/${key}`);
      expect(busy).toMatchObject({ status: 409, body: { error: { code: 'MOUNT_BUSY', details: { journalEntryIds: [entryId] } } } });
      const r = await cli(['mounts', 'remove', key]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('(MOUNT_BUSY)');
      expect((await call('GET', `/v1/mounts/${key}`)).status).toBe(200);
    } finally {
      await owner.end(); // the process is gone: its entry is a crashed command's
    }
    expect(await call('DELETE', `/v1/mounts/${key}`)).toMatchObject({ status: 200, body: { mount: { key }, failedEntries: 1 } });
    const entry = await server.core.pool.query(`SELECT status, error->>'code' AS code FROM filestore.journal_entries WHERE id = $1`, [entryId]);
    expect(entry.rows[0]).toEqual({ status: 'failed', code: 'MOUNT_NOT_FOUND' });
  });
});
