/**
 * Issue 17: `filestore` as users run it (cli/bin.js) runs the CLI bundle — plain JavaScript,
 * each command's code loaded only when that command runs — and never the code of an older
 * build after an edit.
 *
 * The bin runs here from a copy of the package in a temporary directory: cli/bin.js, package.json,
 * a bundle built into its dist/ (cli/bundle.ts bundleCli, as `npm run build:cli`), the sources
 * that bundle records it was built from, and a node_modules holding only the packages a
 * command is allowed to load. A package the code would import and that is not there fails the
 * command (ERR_MODULE_NOT_FOUND), so "it ran" says what was loaded; without tsx in reach the
 * sources could not have run at all.
 */
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleCli, CLI_BUILT_FROM } from '../cli/bundle.ts';
import { FilestoreClient } from '../shared/client/index.ts';
import { startTestServer, type TestServer } from './support/api.ts';
import { createTestMount, type TestMount } from './support/filestore.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const VERSION = (JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

let server: TestServer;
let t: TestMount;
let pkg: string;
let builtAt: number;
let files: string[];

/** A package installed into the copy's node_modules (a link to this checkout's). */
const install = async (name: string) => {
  const to = path.join(pkg, 'node_modules', name);
  await mkdir(path.dirname(to), { recursive: true });
  await symlink(path.join(ROOT, 'node_modules', name), to, 'dir');
};

beforeAll(async () => {
  server = await startTestServer();
  t = await createTestMount(server.core, 'local');
  await new FilestoreClient({ baseUrl: server.url, token: server.tokens.write }).putFile({ mountId: t.mount.key, path: 'docs/readme.txt', body: Buffer.from('hello from the bundle\n') });

  pkg = await mkdtemp(path.join(os.tmpdir(), 'filestore-cli-bundle-'));
  await bundleCli(path.join(pkg, 'dist'));
  ({ builtAt, files } = JSON.parse(await readFile(path.join(pkg, 'dist', CLI_BUILT_FROM), 'utf8')) as { builtAt: number; files: string[] });
  // The sources as the bundle was built from them: copies dated before the build began.
  const before = new Date(builtAt - 60_000);
  for (const file of [...files, 'cli/bin.js']) await cp(path.join(ROOT, file), path.join(pkg, file), { recursive: true });
  for (const file of files) await utimes(path.join(pkg, file), before, before);
  // Only what `--version` and `stat` may load: commander. No tsx, no pg, no BullMQ, no AWS SDK.
  await install('commander');
}, 120_000);

afterAll(async () => {
  await server?.close();
  await t?.cleanup();
  if (pkg) await rm(pkg, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `node <copy>/cli/bin.js ARGS…`, as `npx filestore ARGS…` runs it, against the test server. */
function filestore(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const base: NodeJS.ProcessEnv = { ...process.env, FILESTORE_URL: server.url, FILESTORE_TOKEN: server.tokens.read };
  delete base.FILESTORE_CLI_SOURCES; // the tests' own setting (tests/support/global-setup.ts): the bin's default here
  delete base.NODE_OPTIONS;
  const child = spawn(process.execPath, [path.join(pkg, 'cli/bin.js'), ...args], { cwd: pkg, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('the filestore bin runs the CLI bundle', () => {
  it('records what the bundle was built from: the CLI sources, package.json and the migrations', () => {
    expect(files).toEqual(expect.arrayContaining(['cli/index.ts', 'cli/commands/nodes.ts', 'shared/package.ts', 'package.json', 'migrations']));
    expect(files.some((f) => f.startsWith('migrations/') && f.endsWith('.sql'))).toBe(true);
    expect(files.some((f) => f.startsWith('node_modules/'))).toBe(false);
  });

  it('--version: from the bundle, with neither tsx nor any package but commander in reach', async () => {
    const r = await filestore(['--version']);
    expect(r).toEqual({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
  });

  it('stat MOUNT:PATH against a server loads the API client only: no database, queue or AWS package is there to load', async () => {
    const r = await filestore(['stat', `${t.mount.key}:docs/readme.txt`]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^path +${t.mount.key}:docs/readme.txt$`, 'm'));
    expect(r.stdout).toMatch(/^size +22 B \(22 bytes\)$/m);
  });

  it('an error of the server comes back as the CLI says it (its error module loaded on demand)', async () => {
    const r = await filestore(['stat', `${t.mount.key}:docs/missing.txt`, '--json']);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect((JSON.parse(r.stderr) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
  });

  it('a command that needs a package the copy lacks fails naming it: the check above is real', async () => {
    // `token` loads the server's auth code (zod), which is not installed in the copy.
    const r = await filestore(['token', 'create', '--name', 'x', '--scopes', 'read']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Cannot find package '[^']+'/);
  });

  it('FILESTORE_CLI_SOURCES must be 0 or 1', async () => {
    const r = await filestore(['--version'], { FILESTORE_CLI_SOURCES: 'yes' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('FILESTORE_CLI_SOURCES must be 1');
  });
});

describe('a stale bundle does not run silently', () => {
  // Runs after the describe above (files run their tests in order): it changes the copy.
  it('after a source changes, the bin runs the sources through tsx and says why; FILESTORE_CLI_SOURCES=0 runs the bundle as built', async () => {
    // The copy's package.json now says another version: the sources would print it, the bundle says the one it was built with.
    const manifest = JSON.parse(await readFile(path.join(pkg, 'package.json'), 'utf8')) as { version: string };
    await writeFile(path.join(pkg, 'package.json'), JSON.stringify({ ...manifest, version: '99.0.0-edited' }, null, 2));

    // Without tsx the sources cannot run: an error, not the old bundle's answer.
    const noTsx = await filestore(['--version']);
    expect(noTsx.code).toBe(1);
    expect(noTsx.stdout).toBe('');
    expect(noTsx.stderr).toContain('package.json changed since the CLI bundle was built');
    expect(noTsx.stderr).toContain('tsx');

    for (const name of ['tsx', 'esbuild', '@esbuild']) await install(name);
    const sources = await filestore(['--version']);
    expect(sources.code).toBe(0);
    expect(sources.stdout).toBe('99.0.0-edited\n');
    expect(sources.stderr).toMatch(/^filestore: package\.json changed since the CLI bundle was built: running the sources through tsx/);

    const forced = await filestore(['--version'], { FILESTORE_CLI_SOURCES: '0' });
    expect(forced).toEqual({ code: 0, stdout: `${VERSION}\n`, stderr: '' });

    const quiet = await filestore(['--version'], { FILESTORE_CLI_SOURCES: '1' });
    expect(quiet).toEqual({ code: 0, stdout: '99.0.0-edited\n', stderr: '' });
  });

  it('without a bundle, FILESTORE_CLI_SOURCES=0 says to build it', async () => {
    await rm(path.join(pkg, 'dist/filestore.js'));
    const r = await filestore(['--version'], { FILESTORE_CLI_SOURCES: '0' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('npm run build:cli');
  });
});
