import { existsSync } from 'node:fs';
import { mkdir, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest';
import { buildOnce, descendants, eventually, launch, newcomerEnv, processesMatching, startFilestore, startFolder } from './support/start-process.ts';

// How `npm start` stops, as a user stops it: Ctrl-C in a terminal (SIGINT to the whole
// foreground process group, twice to node: from the terminal and forwarded by npm), and
// `npx filestore start` killed with SIGTERM sent to npx only.

const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));
const folders: string[] = [];
beforeAll(async () => {
  await buildOnce();
});
afterAll(async () => {
  for (const dir of folders) await rm(dir, { recursive: true, force: true });
});

function answers(url: string): Promise<boolean> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const sock = net.connect(Number(port), '127.0.0.1');
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

it('Ctrl-C (SIGINT to the whole process group, delivered twice) stops `npm start` gracefully: exit 0, the embedded PostgreSQL stopped by Filestore, the next start needs no crash recovery', async () => {
  const cwd = await startFolder();
  folders.push(cwd);
  const pgDir = path.join(cwd, '.filestore', 'pg');
  // detached: a process group of its own, as a terminal's foreground job.
  const start = startFilestore(cwd, newcomerEnv(), { detached: true });
  onTestFinished(() => stopLeftovers(pgDir));
  await start.waitFor(/^Ctrl-C stops/m);
  const url = start.url();
  const pid = start.child.pid as number;
  expect(processesMatching(`-D ${pgDir}`)).toHaveLength(1);

  process.kill(-pid, 'SIGINT'); // the terminal
  process.kill(-pid, 'SIGINT'); // npm, forwarding it
  expect(await start.exited).toBe(0);
  expect(start.output()).toMatch(/^filestore: SIGINT, finishing running work/m);
  expect(start.output()).toMatch(/^filestore: stopped$/m);
  expect(start.output()).not.toMatch(/again, exiting without waiting/);
  expect(processesMatching(`-D ${pgDir}`)).toEqual([]);
  expect(existsSync(path.join(pgDir, 'postmaster.pid'))).toBe(false);
  expect(await answers(url)).toBe(false);

  // The next start finds a cleanly shut down database: no crash recovery.
  const again = startFilestore(cwd, newcomerEnv());
  try {
    await again.waitFor(/^Ctrl-C stops/m);
    const pgLog = await readFile(path.join(cwd, '.filestore', 'postgres.log'), 'utf8');
    expect(pgLog).toMatch(/database system was shut down at/);
    expect(pgLog).not.toMatch(/not properly shut down|automatic recovery|was interrupted/);
  } finally {
    again.child.kill('SIGTERM');
    expect(await again.exited).toBe(0);
  }
}, 240_000);

it('`npx filestore start` stopped with SIGTERM sent to npx only: node, esbuild and the embedded PostgreSQL all stop, the port is free', async () => {
  const cwd = await startFolder('filestore-npx-');
  folders.push(cwd);
  // A project with the package installed: npx finds its `filestore` bin in node_modules/.bin.
  await mkdir(path.join(cwd, 'node_modules', '.bin'), { recursive: true });
  await symlink(BIN, path.join(cwd, 'node_modules', '.bin', 'filestore'));
  await writeFile(path.join(cwd, 'package.json'), JSON.stringify({ name: 'try-filestore', private: true }));
  const pgDir = path.join(await realpath(cwd), '.filestore', 'pg');
  const npx = launch('npx', ['filestore', 'start'], cwd, newcomerEnv(), { detached: true });
  const npxPid = npx.child.pid as number;
  try {
    await npx.waitFor(/^Ctrl-C stops/m);
    const url = npx.url();
    const below = descendants(npxPid);
    // esbuild (tsx's transform service) runs too when tsx's cache misses: a descendant like the others.
    const cmds = below.map((p) => p.cmd).join('\n');
    expect(cmds).toMatch(/filestore start/);
    expect(cmds).toContain(`-D ${pgDir}`);

    process.kill(npxPid, 'SIGTERM');
    // Bounded by the graceful stop: each is gone, none left serving.
    expect(await eventually(() => below.every((p) => !alive(p.pid) || !sameProcess(p)), 60_000)).toBe(true);
    expect(processesMatching(`-D ${pgDir}`)).toEqual([]);
    expect(existsSync(path.join(pgDir, 'postmaster.pid'))).toBe(false);
    expect(await answers(url)).toBe(false);
    expect(npx.output()).toMatch(/^filestore: its launcher \(pid \d+\) is gone, finishing running work/m);
    expect(npx.output()).toMatch(/^filestore: stopped$/m);
  } finally {
    try {
      process.kill(-npxPid, 'SIGKILL');
    } catch {
      // already gone
    }
    stopLeftovers(pgDir);
  }
}, 240_000);

it('node killed outright (SIGKILL) leaves its embedded PostgreSQL running (a session of its own): the next start stops that server and starts', async () => {
  const cwd = await startFolder();
  folders.push(cwd);
  const pgDir = path.join(cwd, '.filestore', 'pg');
  onTestFinished(() => stopLeftovers(pgDir));
  const first = startFilestore(cwd, newcomerEnv());
  await first.waitFor(/^Ctrl-C stops/m);
  const [server] = processesMatching(`-D ${pgDir}`);
  first.child.kill('SIGKILL');
  await first.exited;
  expect(processesMatching(`-D ${pgDir}`).map((p) => p.pid)).toContain(server?.pid);

  const again = startFilestore(cwd, newcomerEnv());
  try {
    await again.waitFor(/^Ctrl-C stops/m);
    expect(again.output()).toContain(`a server of an earlier run (pid ${server?.pid}) still holds ${pgDir}; stopping it`);
    expect(processesMatching(`-D ${pgDir}`).map((p) => p.pid)).not.toContain(server?.pid);
    expect((await fetch(`${again.url()}/healthz`)).status).toBe(200);
  } finally {
    again.child.kill('SIGTERM');
    expect(await again.exited).toBe(0);
  }
  expect(processesMatching(`-D ${pgDir}`)).toEqual([]);
}, 240_000);

/** A failed test leaves no server behind (it runs in a session of its own). */
function stopLeftovers(pgDir: string): void {
  for (const p of processesMatching(`-D ${pgDir}`)) process.kill(p.pid, 'SIGINT');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether `p.pid` is still that process (not a zombie, not a reused pid). */
function sameProcess(p: { pid: number; cmd: string }): boolean {
  return processesMatching(p.cmd).some((q) => q.pid === p.pid);
}
