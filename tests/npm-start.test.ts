import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, copyFile, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';
import { bundleCli, DIST_DIR } from '../cli/bundle.ts';

const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url)); // the `filestore` command
const README = fileURLToPath(new URL('../README.md', import.meta.url));

function run(args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Resolves with the output once `line` appears; rejects if the process exits first. */
function waitForOutput(child: ChildProcess, line: RegExp, output: () => string, exited: Promise<number | null>): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no start line; output:\n${output()}`)), 90_000);
    void exited.then((code) => reject(new Error(`exited with ${code} before starting; output:\n${output()}`)));
    child.stdout?.on('data', () => {
      const m = line.exec(output());
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
  });
}

it('a newcomer runs `npm start` (the bundled CLI\'s `start`) on embedded PostgreSQL, puts and lists a file with the CLI, and SIGTERM stops everything', async () => {
  await bundleCli(); // npm start's build step
  const cwd = await mkdtemp(path.join(os.tmpdir(), 'filestore-start-'));
  await chmod(cwd, 0o755); // as root, the embedded server runs as user postgres and must reach its data
  await copyFile(README, path.join(cwd, 'README.md'));
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0' };
  delete env.DATABASE_URL;
  delete env.REDIS_URL;
  delete env.FILESTORE_TOKEN;
  delete env.FILESTORE_API_TOKENS;
  try {
    const child = spawn(process.execPath, [path.join(DIST_DIR, 'filestore.js'), 'start'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await waitForOutput(child, /^try, in another shell/m, () => out, exited);
    const url = /filestore running at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
    expect(out).toContain('catalogue in embedded PostgreSQL');
    expect(out).toContain(`mount "local" at ${path.join(cwd, 'data')}`);
    expect(out).toContain('npx filestore put README.md local:docs/readme.md');

    // The README's first commands, against this server.
    const cli = { ...env, FILESTORE_URL: url as string };
    const put = await run(['put', 'README.md', 'local:docs/readme.md'], cwd, cli);
    expect(put.stderr).toBe('');
    expect(put.code).toBe(0);
    const ls = await run(['ls', 'local:docs'], cwd, cli);
    expect(ls.code).toBe(0);
    const size = (await readFile(README)).length;
    expect(ls.stdout).toMatch(/readme\.md/);
    expect(ls.stdout).toContain('ACTIVE');
    const listed = await run(['ls', 'local:docs', '--json'], cwd, cli);
    const items = JSON.parse(listed.stdout) as Array<{ name: string; sizeBytes: number; consistencyState: string }>;
    expect(items).toEqual([expect.objectContaining({ name: 'readme.md', sizeBytes: size, consistencyState: 'ACTIVE' })]);
    expect(await readFile(path.join(cwd, 'data', 'docs', 'readme.md'))).toEqual(await readFile(README));

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(await readdir(path.join(cwd, '.filestore', 'pg'))).toContain('PG_VERSION');
    // The embedded server is gone with it: its pid file is removed on a clean shutdown.
    expect(await readdir(path.join(cwd, '.filestore', 'pg'))).not.toContain('postmaster.pid');
  } finally {
    await rm(cwd, { recursive: true, force: true });
  }
}, 180_000);
