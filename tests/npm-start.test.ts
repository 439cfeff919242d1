import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url)); // the `filestore` command

it('`filestore start` without DATABASE_URL runs on an embedded PostgreSQL in .filestore/ and stops it on SIGTERM', async () => {
  const cwd = await mkdtemp(path.join(os.tmpdir(), 'filestore-start-'));
  await chmod(cwd, 0o755); // as root, the embedded server runs as user postgres and must reach its data
  const env = { ...process.env };
  delete env.DATABASE_URL;
  delete env.REDIS_URL;
  try {
    const child = spawn(process.execPath, [BIN, 'start'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no start line; output:\n${out}`)), 90_000);
      void exited.then((code) => reject(new Error(`exited with ${code} before starting; output:\n${out}`)));
      child.stdout.on('data', () => {
        if (out.includes('filestore running at')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    expect(out).toContain('catalogue in embedded PostgreSQL');
    expect(out).toContain(`mount "local" at ${path.join(cwd, 'data')}`);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(await readdir(path.join(cwd, '.filestore', 'pg'))).toContain('PG_VERSION');
    // The embedded server is gone with it: its pid file is removed on a clean shutdown.
    expect(await readdir(path.join(cwd, '.filestore', 'pg'))).not.toContain('postmaster.pid');
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
}, 120_000);
