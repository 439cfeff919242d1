/**
 * Issue 16: `filestore agent` watches its local mounts by default (SPEC §8; the variable
 * FILESTORE_ENABLE_WATCHERS=false turns it off, its startup line says which), and a taken port
 * at `filestore agent` / `filestore start` names PORT and FILESTORE_HOST.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_DATABASE_URL } from './support/env.ts';
import { uniqueKey } from './support/filestore.ts';

const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));
let scratch: string;
let taken: net.Server;
let takenPort: number;

beforeAll(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'filestore-agent-cli-'));
  taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  takenPort = (taken.address() as net.AddressInfo).port;
});
afterAll(async () => {
  await new Promise((resolve) => taken?.close(resolve));
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** A process of `filestore COMMAND` with the test database, inline queues, loopback and `env` (undefined removes a variable). */
function run(command: string, env: Record<string, string | undefined>) {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(FILESTORE_|DATABASE_URL$|REDIS_URL$|PORT$)/.test(k)));
  const child = spawn(process.execPath, [BIN, command], {
    cwd: scratch,
    env: { ...base, DATABASE_URL: TEST_DATABASE_URL, REDIS_URL: 'inline', FILESTORE_ALLOW_INLINE: 'true', FILESTORE_HOST: '127.0.0.1', PORT: '0', FILESTORE_AGENT_ID: uniqueKey('cli-agent'), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const started = (pattern: RegExp) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const m = pattern.exec(stdout);
        if (m) resolve(m[0]);
      };
      child.stdout.on('data', check);
      void exited.then((code) => reject(new Error(`exited ${code} before ${pattern}: ${stdout}${stderr}`)));
    });
  return { child, exited, started, output: () => ({ stdout, stderr }) };
}

describe('filestore agent', () => {
  it('watches its local mounts by default; FILESTORE_ENABLE_WATCHERS=false turns it off; the startup line says which', { timeout: 60_000 }, async () => {
    for (const [value, said] of [
      [undefined, 'watchers on (FILESTORE_ENABLE_WATCHERS=false turns them off)'],
      ['false', 'watchers off'],
    ] as const) {
      const agent = run('agent', { FILESTORE_ENABLE_WATCHERS: value });
      try {
        const line = await agent.started(/^filestore agent \S+ at .*$/m);
        expect(line).toContain(`, ${said}, `);
        agent.child.kill('SIGTERM');
        expect(await agent.exited).toBe(0);
      } finally {
        agent.child.kill('SIGKILL');
      }
    }
  });

  it('on a taken port exits 1 saying the port is in use and naming PORT and FILESTORE_HOST', { timeout: 60_000 }, async () => {
    const agent = run('agent', { PORT: String(takenPort), FILESTORE_ENABLE_WATCHERS: 'false' });
    expect(await agent.exited).toBe(1);
    expect(agent.output().stderr).toContain(`filestore: port ${takenPort} is in use on 127.0.0.1: set PORT (or FILESTORE_HOST)\n`);
  });
});

describe('filestore start', () => {
  it('on a taken port exits 1 saying the port is in use and naming PORT and FILESTORE_HOST', { timeout: 60_000 }, async () => {
    // DATABASE_URL set: no embedded PostgreSQL to start; only the port is in the way.
    const start = run('start', { PORT: String(takenPort), FILESTORE_ENABLE_WATCHERS: 'false' });
    expect(await start.exited).toBe(1);
    expect(start.output().stderr).toContain(`filestore: could not start: port ${takenPort} is in use on 127.0.0.1: set PORT (or FILESTORE_HOST)\n`);
  });
});
