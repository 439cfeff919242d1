/**
 * Issue 16, item 7: the CLI speaks the user's language. Run as a user does (`node cli/bin.js …`
 * against a real server): messages name flags and commands, not API fields and routes; a bad
 * FILESTORE_URL is named; `ls docs` (no colon) says the form is MOUNT:PATH; `--version`; errors
 * as JSON under --json (stderr, same exit code); mount keys and zoned timestamps in the output.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './support/api.ts';
import { createTestMount, uniqueKey, type TestMount } from './support/filestore.ts';

const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));
// ISO 8601 with a zone: Z or ±HH:MM.
const ZONED = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:Z|[+-]\d\d:\d\d)/;

let server: TestServer;
let t: TestMount;
let scratch: string;

beforeAll(async () => {
  server = await startTestServer();
  t = await createTestMount(server.core, 'local');
  scratch = await mkdtemp(path.join(os.tmpdir(), 'filestore-cli-words-'));
});
afterAll(async () => {
  await server?.close();
  await t?.cleanup();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `filestore ARGS…` as a user runs it, with the write token unless `env` says otherwise. */
function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: scratch,
    env: { ...process.env, FILESTORE_URL: server.url, FILESTORE_TOKEN: server.tokens.write, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const admin = () => ({ FILESTORE_TOKEN: server.tokens.admin });
const at = (p: string) => `${t.mount.key}:${p}`;
/** No API words: fields passed as "pass X", routes, the "check" body field. */
const API_WORDS = /pass (parents|recursive|overwrite|mountId)|\/v1\/|rootPath|"check"|Idempotency-Key/;

describe('messages name flags and commands, not API fields and routes', () => {
  it('mkdir without -p, rm of a full directory without -r, cp onto a file without --overwrite', async () => {
    const mkdirP = await cli(['mkdir', at('no/such/dir')]);
    expect(mkdirP.code).toBe(1);
    expect(mkdirP.stderr).toBe('filestore: parent directory "no" does not exist; add -p (--parents) to create it (NOT_FOUND)\n');

    await cli(['mkdir', '-p', at('full/inside')]);
    const rmR = await cli(['rm', at('full')]);
    expect(rmR.code).toBe(1);
    expect(rmR.stderr).toBe('filestore: "full" is not empty; add -r (--recursive) to delete it with its contents (DIRECTORY_NOT_EMPTY)\n');

    await cli(['mkdir', at('other')]);
    const cp = await cli(['cp', at('full'), at('other')]);
    expect(cp.code).toBe(1);
    expect(cp.stderr).toBe('filestore: "other" already exists; add --overwrite to replace it (ALREADY_EXISTS)\n');
  });

  it('a paused mount names `filestore mounts resume KEY`', async () => {
    const m = await createTestMount(server.core, 'local');
    try {
      expect((await cli(['mounts', 'pause', m.mount.key], admin())).code).toBe(0);
      const r = await cli(['mkdir', `${m.mount.key}:d`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`filestore: mount "${m.mount.key}" is paused; resume it with \`filestore mounts resume ${m.mount.key}\` (MOUNT_PAUSED)\n`);
    } finally {
      await m.cleanup();
    }
  });

  it('mounts add names --root and --no-check; journal --pending without admin names --mount', async () => {
    const missing = path.join(scratch, 'not-there');
    const r = await cli(['mounts', 'add', 'local', uniqueKey('w'), '--root', missing], admin());
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `filestore: --root ${missing} does not exist on this host; create the directory first (or add --no-check if it will exist before the mount is used) (MOUNT_ROOT_NOT_FOUND)\n`,
    );
    const file = path.join(scratch, 'a-file');
    await writeFile(file, 'x');
    const notDir = await cli(['mounts', 'add', 'local', uniqueKey('w'), '--root', file], admin());
    expect(notDir.stderr).toBe(`filestore: --root ${file} is not a directory (MOUNT_ROOT_NOT_DIRECTORY)\n`);

    const badKey = await cli(['mounts', 'add', 'local', 'Bad_Key', '--root', scratch], admin());
    expect(badKey.code).toBe(2);
    expect(badKey.stderr).toContain('a mount key is 1 to 63 lowercase letters, digits, - and _, starting with a letter or digit (got "Bad_Key")');
    const s3 = await cli(['mounts', 'add', 's3', uniqueKey('w'), '--bucket', 'b', '--endpoint', 'not-a-url'], admin());
    expect(s3.code).toBe(1);
    expect(s3.stderr).toMatch(/^filestore: --bucket: .*; --endpoint: .* \(VALIDATION_ERROR\)\n$/);

    const pending = await cli(['journal', '--pending']);
    expect(pending.code).toBe(1);
    expect(pending.stderr).toContain('needs scope filestore:admin; add --mount KEY for one mount (FORBIDDEN)');
    for (const run of [r, notDir, s3, pending]) expect(run.stderr).not.toMatch(API_WORDS);
  });
});

it('`mounts set KEY --agent ID` assigns a local mount to an agent (what an unassigned mount\'s error tells to do)', async () => {
  const m = await createTestMount(server.core, 'local');
  try {
    const set = await cli(['mounts', 'set', m.mount.key, '--agent', 'host-b', '--json'], admin());
    expect(set.code).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ key: m.mount.key, agentId: 'host-b' });
    const nothing = await cli(['mounts', 'set', m.mount.key], admin());
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toContain('say what to change: --access rw|ro and/or --agent ID');
  } finally {
    await m.cleanup();
  }
});

describe('where the command line is wrong', () => {
  it('a FILESTORE_URL that is not a URL is named, with its value (exit 1, CONFIG_ERROR)', async () => {
    const r = await cli(['ls', at('')], { FILESTORE_URL: 'localhost:4300/x y' });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'filestore: FILESTORE_URL is not an http(s) URL: "localhost:4300/x y"; set it to where Filestore listens, e.g. http://127.0.0.1:4300 (CONFIG_ERROR)\n',
    );
    expect(r.stderr).not.toContain('Invalid URL');
  });

  it('`ls docs` with no mount "docs" says a target is MOUNT:PATH and suggests one', async () => {
    const r = await cli(['ls', 'docs']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^filestore: no mount "docs"; "docs" was read as a mount: a target is MOUNT:PATH, e.g. [a-z0-9_-]+:docs \(mounts: [^)]*\) \(MOUNT_NOT_FOUND\)\n$/);
    expect(r.stderr).toContain(t.mount.key);
    // With the colon, the mount named is what is looked for: no suggestion about the form.
    const colon = await cli(['ls', 'nosuchmount:docs']);
    expect(colon.stderr).toBe('filestore: no mount "nosuchmount"; list mounts with `filestore mounts list` (MOUNT_NOT_FOUND)\n');
    // A command whose argument is a mount key, or --mount KEY, is not about the form of a target.
    for (const args of [['mounts', 'show', 'docs'], ['jobs', '--mount', 'docs']]) {
      expect((await cli(args)).stderr).toBe('filestore: no mount "docs"; list mounts with `filestore mounts list` (MOUNT_NOT_FOUND)\n');
    }
  });

  it('--version prints the version of package.json', async () => {
    const { version } = JSON.parse(await readFile(fileURLToPath(new URL('../package.json', import.meta.url)), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await cli([flag]);
      expect(r).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' });
    }
  });

  it('under --json an error is one JSON document on stderr, stdout stays empty, the exit code is the same', async () => {
    const api = await cli(['stat', at('nothing/here'), '--json']);
    expect(api.code).toBe(1);
    expect(api.stdout).toBe('');
    expect(JSON.parse(api.stderr)).toEqual({ error: { code: 'NOT_FOUND', message: expect.any(String) } });

    const paused = await cli(['mkdir', at('no/such'), '--json']);
    expect(JSON.parse(paused.stderr).error).toEqual({ code: 'NOT_FOUND', message: 'parent directory "no" does not exist; add -p (--parents) to create it' });

    const url = await cli(['ls', at(''), '--json'], { FILESTORE_URL: 'nonsense' });
    expect(url.code).toBe(1);
    expect(JSON.parse(url.stderr)).toEqual({
      error: { code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_URL'), details: { variable: 'FILESTORE_URL', value: 'nonsense' } },
    });

    const usage = await cli(['ls', '--json']);
    expect(usage.code).toBe(2);
    expect(usage.stdout).toBe('');
    expect(JSON.parse(usage.stderr)).toEqual({ error: { code: 'USAGE_ERROR', message: "missing required argument 'target'" } });

    const unauth = await cli(['ls', at(''), '--json'], { FILESTORE_TOKEN: undefined });
    expect(unauth.code).toBe(1);
    expect(JSON.parse(unauth.stderr).error.code).toBe('UNAUTHENTICATED'); // the hint is for people: not in the document
  });
});

describe('output shows mount keys, MOUNT:PATH and timestamps with a zone', () => {
  it('stat, ls, jobs, jobs ID and reconcile --wait', async () => {
    await mkdir(path.join(t.root as string, 'shown'), { recursive: true });
    await writeFile(path.join(t.root as string, 'shown/a.txt'), 'aaa');
    const reconciled = await cli(['reconcile', at('shown'), '--wait']);
    expect(reconciled.code).toBe(0);
    expect(reconciled.stdout).toMatch(new RegExp(`^mount\\s+${t.mount.key}$`, 'm'));
    expect(reconciled.stdout).toMatch(new RegExp(`^finished\\s+${ZONED.source}$`, 'm'));
    expect(reconciled.stdout).not.toContain(t.mount.id);
    const jobId = /^job\s+(\d+)$/m.exec(reconciled.stdout)?.[1];

    const stat = await cli(['stat', at('shown/a.txt')]);
    expect(stat.code).toBe(0);
    expect(stat.stdout).toMatch(new RegExp(`^path\\s+${t.mount.key}:shown/a\\.txt$`, 'm'));
    expect(stat.stdout).toMatch(new RegExp(`^mount\\s+${t.mount.key}$`, 'm'));
    expect(stat.stdout).toMatch(new RegExp(`^modified\\s+${ZONED.source}$`, 'm'));
    expect(stat.stdout).not.toContain(t.mount.id);
    expect((await cli(['stat', t.mount.key])).stdout).toMatch(new RegExp(`^path\\s+${t.mount.key}:$`, 'm'));

    const ls = await cli(['ls', at('shown')]);
    expect(ls.stdout.trim().split('\n')[1]).toMatch(new RegExp(`^a\\.txt\\s+file\\s+3 B\\s+ACTIVE\\s+1\\s+${ZONED.source}$`));

    const jobs = await cli(['jobs', '--mount', t.mount.key]);
    expect(jobs.stdout).toMatch(new RegExp(`^${jobId}\\s+${t.mount.key}\\s+shown\\s+\\S+\\s+succeeded\\s+\\d+\\s+${ZONED.source}\\s+${ZONED.source}$`, 'm'));
    expect(jobs.stdout).not.toContain(t.mount.id);
    const one = await cli(['jobs', String(jobId)]);
    expect(one.stdout).toMatch(new RegExp(`^mount\\s+${t.mount.key}$`, 'm'));
    expect(one.stdout).toMatch(new RegExp(`^created\\s+${ZONED.source}$`, 'm'));
  });

  it('a queued job is followed with `jobs ID --wait` to its end, as the queueing says', async () => {
    await mkdir(path.join(t.root as string, 'shown'), { recursive: true });
    await writeFile(path.join(t.root as string, 'shown/b.txt'), 'bbbb');
    const queued = await cli(['reconcile', at('shown')]);
    expect(queued.code).toBe(0);
    const id = /follow it with `filestore jobs (\d+) --wait`/.exec(queued.stdout)?.[1];
    expect(id, queued.stdout).toBeDefined();
    const followed = await cli(['jobs', String(id), '--wait']);
    expect(followed.code).toBe(0);
    expect(followed.stdout).toMatch(new RegExp(`^job\\s+${id}$`, 'm'));
    expect(followed.stdout).toMatch(/^status\s+succeeded$/m);
    expect(followed.stdout).toMatch(new RegExp(`^finished\\s+${ZONED.source}$`, 'm'));
    const noId = await cli(['jobs', '--wait']);
    expect(noId.code).toBe(2);
    expect(noId.stderr).toContain('--wait follows one job: give its id');
  });
});
