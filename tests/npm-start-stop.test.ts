import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, expect, it, onTestFinished } from 'vitest';
import { buildOnce, newcomerEnv, processesMatching, startFilestore, startFolder } from './support/start-process.ts';

// How `npm start` stops, as a user stops it: Ctrl-C in a terminal (SIGINT to the whole
// foreground process group, twice to node: from the terminal and forwarded by npm), and
// `npx filestore start` killed with SIGTERM sent to npx only.

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

/** A failed test leaves no server behind (it runs in a session of its own). */
function stopLeftovers(pgDir: string): void {
  for (const p of processesMatching(`-D ${pgDir}`)) process.kill(p.pid, 'SIGINT');
}
