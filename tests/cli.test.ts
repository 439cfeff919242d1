import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FilestoreClient, type Mount, type Node } from '../shared/client/index.ts';
import { startTestServer, type TestServer } from './support/api.ts';
import { createTestMount, uniqueKey, type TestMount } from './support/filestore.ts';

const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));

let server: TestServer;
let t: TestMount;
let scratch: string;

beforeAll(async () => {
  server = await startTestServer();
  t = await createTestMount(server.core, 'local');
  scratch = await mkdtemp(path.join(os.tmpdir(), 'filestore-cli-'));
});

afterAll(async () => {
  await server?.close();
  await t?.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stdoutBytes: Buffer;
  stderr: string;
}

function start(args: string[], env: Record<string, string | undefined> = {}): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], {
    cwd: scratch,
    env: { ...process.env, FILESTORE_URL: server.url, FILESTORE_TOKEN: server.tokens.write, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Runs `filestore ARGS…` as a user would, against the test server with the write token unless `env` says otherwise. */
function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const child = start(args, env);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on('data', (c: Buffer) => out.push(c));
  child.stderr?.on('data', (c: Buffer) => err.push(c));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      const stdoutBytes = Buffer.concat(out);
      resolve({ code, stdout: stdoutBytes.toString('utf8'), stdoutBytes, stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

/** Runs and expects exit code 0; returns stdout. */
async function ok(args: string[], env: Record<string, string | undefined> = {}): Promise<string> {
  const r = await cli(args, env);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r.stdout;
}

const target = (p = '') => (p === '' ? t.mount.key : `${t.mount.key}:${p}`);
const onDisk = (p: string) => path.join(t.root as string, p);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('filestore CLI', () => {
  it('put → ls → stat → get round-trips a file, byte for byte, with tables by default and --json on request', async () => {
    const bytes = randomBytes(150_000);
    const local = path.join(scratch, 'report.bin');
    await writeFile(local, bytes);

    const put = await ok(['put', local, target('docs/reports/')]);
    expect(put).toMatch(/path\s+.*:docs\/reports\/report\.bin/);
    expect(put).toContain(sha256(bytes));
    expect(put).toMatch(/version\s+1/);
    expect(put).toMatch(/state\s+ACTIVE/);
    expect(sha256(await readFile(onDisk('docs/reports/report.bin')))).toBe(sha256(bytes));

    const table = await ok(['ls', target('docs')]);
    const [head, row] = table.trim().split('\n');
    expect(head?.split(/\s+/)).toEqual(['name', 'kind', 'size', 'state', 'version', 'modified']);
    expect(row).toMatch(/^reports\/\s+directory\s+146 KiB\s+ACTIVE\s+1\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:Z|[+-]\d\d:\d\d)$/);

    const listed = JSON.parse(await ok(['ls', target('docs/reports'), '--json'])) as Node[];
    expect(listed.map((n) => [n.name, n.kind, n.sizeBytes])).toEqual([['report.bin', 'file', bytes.length]]);

    const dir = JSON.parse(await ok(['stat', target('docs'), '--json'])) as Node;
    expect(dir).toMatchObject({ path: 'docs', kind: 'directory', rollup: { fileCount: 1, dirCount: 1, sizeBytes: bytes.length } });
    expect(await ok(['stat', target('docs/reports/report.bin')])).toMatch(/sha256\s+[0-9a-f]{64}/);

    const copy = path.join(scratch, 'copy.bin');
    expect(await ok(['get', target('docs/reports/report.bin'), copy])).toContain(`to ${copy}`);
    expect(sha256(await readFile(copy))).toBe(sha256(bytes));

    const piped = await cli(['get', target('docs/reports/report.bin')]);
    expect(piped.code).toBe(0);
    expect(sha256(piped.stdoutBytes)).toBe(sha256(bytes));
  });

  it('put --if-match refuses a stale version with VERSION_MISMATCH and exit code 1', async () => {
    const local = path.join(scratch, 'v.txt');
    await writeFile(local, 'first');
    await ok(['put', local, target('v.txt'), '--if-match', '0', '--verify']);
    const stale = await cli(['put', local, target('v.txt'), '--if-match', '0']);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/^filestore: .*\(VERSION_MISMATCH\)\n$/);
    expect(await readFile(onDisk('v.txt'), 'utf8')).toBe('first');
  });

  it('mkdir -p, mv, cp and rm -r change the files on disk', async () => {
    expect(await ok(['mkdir', '-p', target('tree/a/b')])).toContain(':tree/a/b');
    expect((await stat(onDisk('tree/a/b'))).isDirectory()).toBe(true);
    await writeFile(path.join(scratch, 'leaf.txt'), 'leaf');
    await ok(['put', path.join(scratch, 'leaf.txt'), target('tree/a/b/leaf.txt')]);

    await ok(['mv', target('tree/a'), target('moved')]);
    expect(await readFile(onDisk('moved/b/leaf.txt'), 'utf8')).toBe('leaf');
    await expect(stat(onDisk('tree/a'))).rejects.toMatchObject({ code: 'ENOENT' });

    const copied = JSON.parse(await ok(['cp', target('moved'), target('copied'), '--json'])) as { journalEntryId: number; node: Node };
    expect(copied).toMatchObject({ journalEntryId: expect.any(Number), node: { path: 'copied', kind: 'directory' } });
    expect(await readFile(onDisk('copied/b/leaf.txt'), 'utf8')).toBe('leaf');

    const notEmpty = await cli(['rm', target('moved')]);
    expect(notEmpty.code).toBe(1);
    expect(notEmpty.stderr).toContain('(DIRECTORY_NOT_EMPTY)');
    await ok(['rm', '-r', target('moved')]);
    await expect(stat(onDisk('moved'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readFile(onDisk('copied/b/leaf.txt'), 'utf8')).toBe('leaf');
  });

  it('mounts add/list/pause need an admin token, and a write token is told which scope it lacks', async () => {
    const key = uniqueKey('cli');
    const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-cli-mount-'));
    try {
      const admin = { FILESTORE_TOKEN: server.tokens.admin };
      const added = JSON.parse(await ok(['mounts', 'add', 'local', key, '--root', root, '--json'], admin)) as Mount;
      expect(added).toMatchObject({ key, kind: 'local', rootPath: root, accessMode: 'rw', state: 'active' });

      const listed = JSON.parse(await ok(['mounts', 'list', '--json'])) as Mount[];
      expect(listed.find((m) => m.key === key)).toMatchObject({ id: added.id });
      expect(await ok(['mounts'], admin)).toMatch(new RegExp(`^${key}\\s+local\\s+${root}\\s+rw\\s+active`, 'm'));
      // Where a mount lives on its host is for admins only.
      expect(await ok(['mounts'])).toMatch(new RegExp(`^${key}\\s+local\\s+-\\s+rw\\s+active`, 'm'));

      const denied = await cli(['mounts', 'pause', key]);
      expect(denied.code).toBe(1);
      expect(denied.stderr).toContain('(FORBIDDEN)');
      expect(denied.stderr).toContain('hint: set FILESTORE_TOKEN to a token with scope filestore:admin');

      expect(JSON.parse(await ok(['mounts', 'pause', key, '--json'], admin))).toMatchObject({ key, state: 'paused' });
      await writeFile(path.join(scratch, 'p.txt'), 'p');
      const paused = await cli(['put', path.join(scratch, 'p.txt'), `${key}:p.txt`]);
      expect(paused.code).toBe(1);
      expect(paused.stderr).toContain('(MOUNT_PAUSED)');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('a usage error exits with 2 and says what is wrong', async () => {
    const missing = await cli(['ls']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("missing required argument 'target'");
    const badTarget = await cli(['mkdir', `${t.mount.key}:`]);
    expect(badTarget.code).toBe(2);
    expect(badTarget.stderr).toContain('is the mount root');
  });

  it('an unreachable server exits with 1 and says how to start it', async () => {
    const port = await closedPort();
    const r = await cli(['ls', target()], { FILESTORE_URL: `http://127.0.0.1:${port}` });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      `filestore: cannot reach Filestore at http://127.0.0.1:${port}: is it running? start it with \`npm start\`, or set FILESTORE_URL\n`,
    );
  });

  it('a missing token exits with 1, UNAUTHENTICATED and a hint about FILESTORE_TOKEN', async () => {
    const r = await cli(['ls', target()], { FILESTORE_TOKEN: undefined });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^filestore: .*\(UNAUTHENTICATED\)\nhint: set FILESTORE_TOKEN to an API token/);
  });

  it('events tail prints a line per event as it happens (nodes discovered together: one line naming the first and last) and stops cleanly on Ctrl-C', async () => {
    const m = await createTestMount(server.core, 'local');
    const tail = start(['events', 'tail', '--mount', m.mount.key]);
    try {
      let stdout = '';
      let stderr = '';
      tail.stdout?.on('data', (c: Buffer) => (stdout += c.toString()));
      const listening = new Promise<void>((resolve) =>
        tail.stderr?.on('data', (c: Buffer) => {
          stderr += c.toString();
          if (stderr.includes('listening for events')) resolve();
        }),
      );
      await listening;
      const client = new FilestoreClient({ baseUrl: server.url, token: server.tokens.write });
      await client.putFile({ mountId: m.mount.key, path: 'live/news.txt', body: 'hello' });
      await new Promise<void>((resolve) => {
        const check = () => stdout.includes('filestore.command.completed') && resolve();
        tail.stdout?.on('data', check);
        check();
      });
      const lines = stdout.trim().split('\n');
      expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(?:Z|[+-]\\d\\d:\\d\\d)  filestore\\.node\\.created\\s+${m.mount.key}:live/news\\.txt$`)));
      // 120 files made on disk, then discovered by one reconciliation: one line lists them.
      await mkdir(path.join(m.root as string, 'bulk'));
      await Promise.all(Array.from({ length: 120 }, (_, i) => writeFile(path.join(m.root as string, 'bulk', `f${String(i).padStart(3, '0')}.txt`), 'x')));
      await client.reconcile({ mountId: m.mount.key, path: 'bulk', recursive: true });
      await new Promise<void>((resolve) => {
        const check = () => stdout.includes('filestore.nodes.discovered') && resolve();
        tail.stdout?.on('data', check);
        check();
      });
      expect(stdout.trim().split('\n')).toContainEqual(expect.stringMatching(new RegExp(`  filestore\\.nodes\\.discovered\\s+${m.mount.key}:bulk/f000\\.txt … bulk/f119\\.txt \\(120 nodes\\)$`)));
      const exited = new Promise<number | null>((resolve) => tail.on('close', resolve));
      tail.kill('SIGINT');
      expect(await exited).toBe(0);
    } finally {
      tail.kill('SIGKILL');
      await m.cleanup();
    }
  });

  it('token create prints a token and the FILESTORE_API_TOKENS entry holding its sha256', async () => {
    const created = JSON.parse(await ok(['token', 'create', '--name', 'ci-bot', '--scopes', 'read,write', '--json'])) as {
      token: string;
      entry: { name: string; sha256: string; scopes: string[] };
    };
    expect(created.token).toMatch(/^fs_[A-Za-z0-9_-]{43}$/);
    expect(created.entry).toEqual({
      name: 'ci-bot',
      sha256: createHash('sha256').update(created.token).digest('hex'),
      scopes: ['filestore:read', 'filestore:write'],
    });
    expect((await ok(['token', 'hash', created.token])).trim()).toBe(created.entry.sha256);
  });
});

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}
