import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DockerfileParser, type Copy, type Env, type Instruction } from 'dockerfile-ast';
import { validate } from 'dockerfile-utils';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { bundleCli } from '../cli/bundle.ts';
import { TEST_DATABASE_URL } from './support/env.ts';

/**
 * agent/Dockerfile's promises checked by parsing it: the install steps CI runs, a non-root
 * user, tini as PID 1 in exec form running the agent, a health check that really answers, and
 * a runtime stage that carries what the agent loads and nothing else (its files are assembled
 * here and run). tests/agent-image.test.ts builds the image and runs it where Docker runs.
 */
const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOCKERFILE = readFileSync(path.join(ROOT, 'agent/Dockerfile'), 'utf8');
const CI_RUN = readFileSync(path.join(ROOT, '.ci/run'), 'utf8');
const DOCKERIGNORE = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8');

const instructions = DockerfileParser.parse(DOCKERFILE).getInstructions();
/** Instructions per stage (a stage starts at each FROM). */
const stages: Instruction[][] = [];
for (const i of instructions) {
  if (i.getKeyword() === 'FROM') stages.push([]);
  stages.at(-1)?.push(i);
}
const runtime = stages.at(-1) ?? [];
/** A stage by its name (`FROM … AS name`). */
const stage = (name: string | undefined): Instruction[] =>
  stages.find((st) => (st[0]?.getArgumentsContent() ?? '').split(/\s+/)[2] === name) ?? [];
const of = (stage: Instruction[], keyword: string) => stage.filter((i) => i.getKeyword() === keyword);
const last = (stage: Instruction[], keyword: string) => of(stage, keyword).at(-1);
const position = (i: Instruction | undefined) => (i ? instructions.indexOf(i) : -1);
const envOf = (stage: Instruction[]) => new Map(of(stage, 'ENV').flatMap((e) => (e as Env).getProperties().map((p) => [p.getName(), p.getValue()] as const)));

/** `npm …` commands of a shell text, one per command (split at newlines, `&&`, `;`). */
function npmCommands(shell: string): string[] {
  return shell
    .replace(/\\\n/g, ' ')
    .split(/\n|&&|;/)
    .map((c) => c.trim().replace(/\s+/g, ' '))
    .filter((c) => c.startsWith('npm '));
}

/** Install and build steps: CI's npm commands less the test run (it needs PostgreSQL and Redis) and linting. */
function installAndBuildSteps(commands: string[]): string[] {
  return commands.filter((c) => !/^npm (test|run test|run lint)\b/.test(c));
}

/** Runs the HEALTHCHECK's command (its `node` being this one) with PORT set; resolves with the exit code. */
async function healthcheckExit(port: number): Promise<number> {
  const hc = last(runtime, 'HEALTHCHECK');
  const content = hc?.getArgumentsContent() ?? '';
  const argv = JSON.parse(content.replace(/^CMD\s+/i, '')) as string[];
  expect(argv[0]).toBe('node');
  try {
    await run(process.execPath, argv.slice(1), { env: { ...process.env, PORT: String(port) }, timeout: 10_000 });
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

async function serve(status: number): Promise<{ port: number; paths: string[]; close: () => Promise<void> }> {
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    paths.push(req.url ?? '');
    res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, paths, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** A .dockerignore pattern as a RegExp over context-relative paths (`*`, `**`; enough for this file). */
function ignorePattern(pattern: string): RegExp {
  const body = pattern
    .replace(/^\//, '')
    .split('/')
    .map((seg) => (seg === '**' ? '(?:.*/)?' : `${seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}/`))
    .join('');
  return new RegExp(`^${body.replace(/\(\?:\.\*\/\)\?$/, '.*').replace(/\/$/, '')}(?:/.*)?$`);
}
const ignored = (p: string) =>
  DOCKERIGNORE.split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith('!'))
    .some((pattern) => ignorePattern(pattern).test(p));

const BIN = path.join(ROOT, 'cli/bin.js');
const LOCK = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };

/** The top-level packages `npm ci --omit=dev` installs from the lockfile (those installed here). */
function productionPackages(): string[] {
  return Object.entries(LOCK.packages)
    .filter(([key, p]) => key.startsWith('node_modules/') && !key.slice('node_modules/'.length).includes('/node_modules/') && p.dev !== true)
    .map(([key]) => key.slice('node_modules/'.length))
    .filter((name) => existsSync(path.join(ROOT, 'node_modules', name)));
}

/**
 * The runtime stage's files, as its COPY instructions place them under `app`: the build stage's
 * are this repository's after `npm run build`; node_modules of the production-dependencies
 * stage is this repository's production packages alone (linked, not copied).
 */
async function assembleRuntime(app: string): Promise<void> {
  for (const c of of(runtime, 'COPY') as Copy[]) {
    const args = (c.getArgumentsContent() ?? '').split(/\s+/);
    const dest = (args.at(-1) as string).replace(/^\.\/?/, '');
    for (const src of args.slice(0, -1)) {
      const rel = src.replace(/^\/app\//, '');
      const target = path.join(app, dest === '' ? path.basename(rel) : dest);
      if (rel !== 'node_modules') {
        await cp(path.join(ROOT, rel), target, { recursive: true });
        continue;
      }
      expect(c.getFromFlag()?.getValue()).toBe('deps');
      for (const name of productionPackages()) {
        await mkdir(path.dirname(path.join(target, name)), { recursive: true });
        await symlink(path.join(ROOT, 'node_modules', name), path.join(target, name));
      }
    }
  }
}

async function dropDatabase(url: string): Promise<void> {
  const admin = new URL(url);
  const name = decodeURIComponent(admin.pathname.slice(1));
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${name.replace(/"/g, '""')}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
}

describe('agent/Dockerfile', () => {
  it('passes the Dockerfile linter (dockerfile-utils) without errors or warnings', () => {
    expect(validate(DOCKERFILE).map((d) => `line ${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
  });

  it('builds every stage on NODE_IMAGE, node:22-slim unless the build passes another', () => {
    const globalArgs = instructions.slice(0, position(instructions.find((i) => i.getKeyword() === 'FROM'))).filter((i) => i.getKeyword() === 'ARG');
    expect(globalArgs.map((a) => a.getArgumentsContent())).toEqual(['NODE_IMAGE=node:22-slim']);
    const names = new Set<string>();
    for (const stage of stages) {
      const from = stage[0]?.getArgumentsContent() ?? '';
      const [image, as, name] = from.split(/\s+/);
      expect(image === '${NODE_IMAGE}' || names.has(image ?? ''), `FROM ${from}`).toBe(true);
      if (as?.toUpperCase() === 'AS' && name) names.add(name);
    }
    expect(stages.length).toBeGreaterThan(0);
  });

  it('installs, type-checks and builds with exactly the npm commands .ci/run runs, in the same order', () => {
    const ci = installAndBuildSteps(npmCommands(CI_RUN));
    const image = of(stage('build'), 'RUN').flatMap((r) => npmCommands(r.getArgumentsContent() ?? ''));
    expect(ci.length).toBeGreaterThan(0);
    expect(image).toEqual(ci);
  });

  it("takes the runtime's packages from a stage that installs the same lockfile without devDependencies (no esbuild, no tsx)", () => {
    const copies = of(runtime, 'COPY') as Copy[];
    const modules = copies.find((c) => /\/app\/node_modules\s/.test(c.getArgumentsContent() ?? ''));
    const from = stage(modules?.getFromFlag()?.getValue() ?? undefined);
    expect(of(from, 'COPY').map((c) => c.getArgumentsContent())).toEqual(['package.json package-lock.json ./']);
    expect(of(from, 'RUN').flatMap((r) => npmCommands(r.getArgumentsContent() ?? ''))).toEqual(['npm ci --omit=dev --no-audit --no-fund']);
    const production = productionPackages();
    for (const name of ['esbuild', 'tsx', 'typescript', 'vitest']) expect(production, name).not.toContain(name);
    for (const name of ['pg', 'node-pg-migrate', 'ioredis', 'bullmq']) expect(production, name).toContain(name);
  });

  it('installs before NODE_ENV=production, as CI does (npm ci would otherwise leave out devDependencies)', () => {
    const install = of(instructions, 'RUN').find((r) => /\bnpm (ci|install)\b/.test(r.getArgumentsContent() ?? ''));
    const setters = [...of(instructions, 'ENV'), ...of(instructions, 'ARG')].filter((i) => /\bNODE_ENV\b/.test(i.getArgumentsContent() ?? ''));
    expect(install).toBeDefined();
    for (const s of setters) expect(position(s), `${s.getKeyword()} ${s.getArgumentsContent()} comes before the install`).toBeGreaterThan(position(install));
    expect(envOf(runtime).get('NODE_ENV')).toBe('production');
  });

  it('runs as a non-root user, given numerically', () => {
    const user = last(runtime, 'USER')?.getArgumentsContent()?.trim() ?? '';
    expect(user).toMatch(/^\d+(:\d+)?$/);
    expect(Number(user.split(':')[0])).not.toBe(0);
    expect(position(last(runtime, 'USER'))).toBeLessThan(position(last(runtime, 'CMD')));
  });

  it('runs `filestore agent` under tini as PID 1 (it reaps and forwards signals), in exec form', async () => {
    const cmd = last(runtime, 'CMD');
    expect(JSON.parse(last(runtime, 'ENTRYPOINT')?.getArgumentsContent() ?? 'null')).toEqual(['/usr/bin/tini', '--']);
    expect(of(runtime, 'RUN').map((r) => r.getArgumentsContent() ?? '').join('\n')).toMatch(/apt-get install -y --no-install-recommends tini\b/);
    const argv = JSON.parse(cmd?.getArgumentsContent() ?? 'null') as string[];
    expect(argv).toEqual(['node', 'dist/filestore.js', 'agent']);
    const stopsignal = last(runtime, 'STOPSIGNAL')?.getArgumentsContent() ?? 'SIGTERM';
    expect(stopsignal).toBe('SIGTERM');
    // The command exists and is the agent (help only: the agent itself needs PostgreSQL and
    // Redis), in the bundle the build stage makes (npm run build).
    await bundleCli();
    const { stdout } = await run(process.execPath, [...argv.slice(1), '--help'], { cwd: ROOT, timeout: 30_000 });
    expect(stdout).toContain('run the on-prem agent');
  });

  it('listens on all interfaces at the exposed port, and declares the mounts volume', () => {
    const env = envOf(runtime);
    expect(env.get('FILESTORE_HOST')).toBe('0.0.0.0');
    const port = env.get('PORT') ?? '4300';
    expect(of(runtime, 'EXPOSE').map((e) => e.getArgumentsContent()?.trim())).toContain(port);
    expect(of(runtime, 'VOLUME').map((v) => v.getArgumentsContent())).toContain('["/mounts"]');
  });

  it('has a HEALTHCHECK that exits 0 when /healthz answers 200 on PORT, and 1 otherwise', async () => {
    expect(of(runtime, 'HEALTHCHECK')).toHaveLength(1);
    const ok = await serve(200);
    try {
      expect(await healthcheckExit(ok.port)).toBe(0);
      expect(ok.paths).toEqual(['/healthz']);
    } finally {
      await ok.close();
    }
    const failing = await serve(503);
    try {
      expect(await healthcheckExit(failing.port)).toBe(1);
    } finally {
      await failing.close();
    }
    const gone = await serve(200);
    await gone.close();
    expect(await healthcheckExit(gone.port)).toBe(1);
  });

  it('carries dist/, the production packages and package.json into the runtime stage, and no sources', () => {
    const copied = of(runtime, 'COPY').flatMap((c) => (c.getArgumentsContent() ?? '').split(/\s+/).slice(0, -1));
    expect(copied.sort()).toEqual(['/app/dist', '/app/node_modules', '/app/package.json']);
  });

  it("runs the agent's code from the runtime stage's files alone: migrations and walker processes from dist/, no sources, no esbuild", async () => {
    await bundleCli(); // the build stage's `npm run build`
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'filestore-image-'));
    const database = new URL(TEST_DATABASE_URL);
    database.pathname = `/${decodeURIComponent(database.pathname.slice(1))}_image_${process.pid}`;
    try {
      const app = path.join(tmp, 'app');
      await assembleRuntime(app);
      expect((await readdir(app)).sort()).toEqual(['dist', 'node_modules', 'package.json']);
      expect(existsSync(path.join(app, 'node_modules', 'esbuild'))).toBe(false);
      // A tree for `filestore start`'s mount "local" (./data), wide enough to be split over walkers.
      const work = path.join(tmp, 'work');
      let entries = 0;
      for (const d of ['a', 'b', 'c', 'd', 'e']) {
        await mkdir(path.join(work, 'data', d, 'sub'), { recursive: true });
        entries += 2;
        for (let f = 0; f < 20; f++, entries++) await writeFile(path.join(work, 'data', d, `f${f}.txt`), `${d}${f}`);
        await writeFile(path.join(work, 'data', d, 'sub', 'deep.txt'), 'deep');
        entries++;
      }
      // Watchers off (npm start's default is on): the audit below, not the watcher's catch-up rescan, is to walk the tree.
      const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: tmp, DATABASE_URL: database.toString(), REDIS_URL: 'inline', PORT: '0', FILESTORE_ENABLE_WATCHERS: 'false' };
      const child = spawn(process.execPath, [path.join(app, 'dist/filestore.js'), 'start'], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      try {
        const url = await new Promise<string>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no start line; output:\n${out}`)), 90_000);
          void exited.then((code) => reject(new Error(`exited with ${code} before starting; output:\n${out}`)));
          child.stdout.on('data', () => {
            const m = /filestore running at (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
            if (m) {
              clearTimeout(timer);
              resolve(m[1] as string);
            }
          });
        });
        // The version the build wrote into the bundle.
        const openapi = (await (await fetch(`${url}/openapi.json`)).json()) as { info: { version: string } };
        expect(openapi.info.version).toBe(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
        // An audit of the whole mount: its walk runs in walker processes started from dist/walker.cjs.
        const { stdout } = await run(process.execPath, [BIN, 'reconcile', 'local:', '--wait', '--json'], { env: { ...process.env, FILESTORE_URL: url }, timeout: 60_000 });
        const job = JSON.parse(stdout) as { status: string; result: { discovered: number } };
        expect(job, out).toMatchObject({ status: 'succeeded', result: { discovered: entries } });
      } finally {
        child.kill('SIGTERM');
      }
      expect(await exited, out).toBe(0); // drained and stopped on SIGTERM
      expect(out).not.toMatch(/walker process/);
    } finally {
      await rm(tmp, { recursive: true, force: true });
      await dropDatabase(database.toString());
    }
  }, 180_000);
});

describe('.dockerignore', () => {
  it('keeps the host node_modules and build output, .git and local state out of the build context', () => {
    for (const p of ['node_modules', 'cdk/node_modules', 'dist', '.git', '.filestore', 'data', '.env']) expect(ignored(p), p).toBe(true);
  });

  it('keeps everything the type check and the image need', () => {
    for (const p of ['package.json', 'package-lock.json', 'tsconfig.json', 'vitest.config.ts', 'shared', 'cli', 'agent', 'migrations', 'tests', 'bench']) {
      expect(ignored(p), p).toBe(false);
    }
  });
});
