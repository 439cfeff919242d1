import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './support/api.ts';
import { createTestMount, type TestMount } from './support/filestore.ts';

/**
 * `filestore/client` as a user takes it away (issue 16, item 11): `npm pack` of this
 * repository, the tarball installed in an empty directory with no repository beside it, then
 * used from plain Node ESM (an .mjs calling a real server) and from TypeScript (tsc,
 * moduleResolution NodeNext).
 *
 * The tarball's own dependencies are installed with `npm ci --offline` from a lockfile pinned
 * to this repository's (the versions the tests ran against, so every tarball is in the npm
 * cache `npm ci` filled): the install needs no network. Its packages are the server's; the
 * client itself loads none of them (cli/build-client.ts refuses a bundle importing one), and
 * its declarations need `zod`'s (the wire types are the schemas' z.infer).
 */
const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NPM_ENV = { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };
const TSC = path.join(ROOT, 'node_modules/typescript/bin/tsc');

interface LockEntry {
  dev?: boolean;
  link?: boolean;
}

let dir: string;
let app: string;
let server: TestServer;
let t: TestMount;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filestore-client-package-'));
  app = path.join(dir, 'app');
  // npm pack runs "prepack" (cli/build-client.ts): the package's dist/client is built from these sources.
  const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: ROOT, env: NPM_ENV, timeout: 120_000 });
  const [packed] = JSON.parse(stdout.slice(stdout.indexOf('['))) as Array<{ filename: string; integrity: string; files: Array<{ path: string }> }>;
  if (!packed) throw new Error(`npm pack printed no package: ${stdout}`);
  const manifest = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; dependencies: Record<string, string> };
  const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const tarball = `file:../${packed.filename}`;
  // The app's lockfile: filestore from the tarball, its dependencies as this repository's
  // lockfile resolved them (the same node_modules/ paths: they hoist the same way).
  const packages: Record<string, unknown> = {
    '': { name: 'app', dependencies: { [manifest.name]: tarball } },
    [`node_modules/${manifest.name}`]: { version: manifest.version, resolved: tarball, integrity: packed.integrity, dependencies: manifest.dependencies },
  };
  for (const [key, entry] of Object.entries(lock.packages)) if (key.startsWith('node_modules/') && entry.dev !== true && entry.link !== true) packages[key] = entry;
  await run('mkdir', ['-p', app]);
  await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module', dependencies: { [manifest.name]: tarball } }, null, 2));
  await writeFile(path.join(app, 'package-lock.json'), JSON.stringify({ name: 'app', lockfileVersion: 3, requires: true, packages }, null, 2));
  await run('npm', ['ci', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: app, env: NPM_ENV, timeout: 180_000 });

  server = await startTestServer();
  t = await createTestMount(server.core, 'local');
}, 300_000);

afterAll(async () => {
  await server?.close();
  await t?.cleanup();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('the packed filestore/client', () => {
  it('carries the built client and its declarations, and no sources', async () => {
    const installed = path.join(app, 'node_modules/filestore');
    expect((await readdir(installed)).sort()).toEqual(['README.md', 'cli', 'dist', 'package.json']);
    expect((await readdir(path.join(installed, 'dist'))).sort()).toEqual(['client']);
    const manifest = JSON.parse(readFileSync(path.join(installed, 'package.json'), 'utf8')) as { exports: Record<string, unknown> };
    expect(manifest.exports['./client']).toEqual({ types: './dist/client/types/client/index.d.ts', import: './dist/client/index.js' });
  });

  it('works from plain Node ESM in a directory with no repository: constructs the client and lists mounts on a real server', async () => {
    const script = path.join(app, 'list-mounts.mjs');
    await writeFile(
      script,
      [
        "import { FilestoreClient, FilestoreApiError } from 'filestore/client';",
        'const client = new FilestoreClient({ baseUrl: process.env.FILESTORE_URL, token: process.env.FILESTORE_TOKEN });',
        'const page = await client.listMounts();',
        'let refused = null;',
        "try { await new FilestoreClient({ baseUrl: process.env.FILESTORE_URL, token: 'wrong' }).listMounts(); } catch (err) { refused = err instanceof FilestoreApiError ? err.code : String(err); }",
        'console.log(JSON.stringify({ keys: page.items.map((m) => m.key), refused }));',
      ].join('\n'),
    );
    // `node` itself, no loader: the export is JavaScript.
    const { stdout } = await run(process.execPath, [script], { cwd: app, env: { PATH: process.env.PATH, FILESTORE_URL: server.url, FILESTORE_TOKEN: server.tokens.read }, timeout: 30_000 });
    const result = JSON.parse(stdout) as { keys: string[]; refused: string };
    expect(result.keys).toContain(t.mount.key);
    expect(result.refused).toBe('UNAUTHENTICATED');
  });

  it('type-checks from TypeScript (moduleResolution NodeNext, strict): the wire types resolve, and a misuse is a type error', async () => {
    await writeFile(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          // As most projects have it (and tsc's checking of zod's own declarations takes long);
          // the misuse below proves the declarations resolve (an unresolved type would be any).
          skipLibCheck: true,
          // @types/node: installed with the package's dependencies (typeRoots default to ./node_modules/@types).
          types: ['node'],
        },
        files: ['use.ts'],
      }),
    );
    const good = [
      "import { FilestoreClient, FilestoreApiError, type KnownErrorCode, type Mount, type Node } from 'filestore/client';",
      // The server's codes, not a hand-kept copy of them (one was missing once).
      "const codes: KnownErrorCode[] = ['METHOD_NOT_ALLOWED', 'MOUNT_BUSY', 'UNEXPECTED_RESPONSE'];",
      "const client = new FilestoreClient({ baseUrl: 'http://127.0.0.1:4000', token: 't' });",
      'const page = await client.listMounts();',
      'const mounts: Mount[] = page.items;',
      "const key: string = mounts[0]?.key ?? '';",
      'const kind: Node["kind"] | undefined = undefined;',
      'export { key, kind, codes, FilestoreApiError };',
    ].join('\n');
    await writeFile(path.join(app, 'use.ts'), good);
    await run(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: app, timeout: 120_000 });

    await writeFile(path.join(app, 'use.ts'), `${good}\nconst wrong: number = mounts[0]!.key;\nexport { wrong };\n`);
    const failed = await run(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: app, timeout: 120_000 }).then(
      () => '',
      (err: { stdout?: string }) => err.stdout ?? 'failed',
    );
    expect(failed).toMatch(/use\.ts\(\d+,\d+\): error TS2322: Type 'string' is not assignable to type 'number'/);
  }, 180_000);
});
