import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { DockerfileParser, type Copy, type Env, type Instruction } from 'dockerfile-ast';
import { validate } from 'dockerfile-utils';
import { describe, expect, it } from 'vitest';
import { bundleCli } from '../cli/bundle.ts';

/**
 * agent/Dockerfile cannot be built here (no Docker engine), so its promises are checked by
 * parsing it: the install steps CI runs, a non-root user, node as PID 1 in exec form, a
 * health check that really answers, and a runtime stage that carries what the agent loads.
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

/** Relative imports reachable from `entry` (static and dynamic), as repository-relative paths. */
function reachableFiles(entry: string): Set<string> {
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    if (!file.endsWith('.ts')) continue;
    const source = readFileSync(path.join(ROOT, file), 'utf8');
    const specifiers = [
      ...source.matchAll(/\b(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g),
      ...source.matchAll(/new URL\('(\.{1,2}\/[^']+)', import\.meta\.url\)/g),
    ];
    for (const [, spec] of specifiers) todo.push(path.relative(ROOT, path.resolve(ROOT, path.dirname(file), spec as string)));
  }
  return seen;
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

describe('agent/Dockerfile', () => {
  it('passes the Dockerfile linter (dockerfile-utils) without errors or warnings', () => {
    expect(validate(DOCKERFILE).map((d) => `line ${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
  });

  it('builds on node:22-slim in every stage', () => {
    const names = new Set<string>();
    for (const stage of stages) {
      const from = stage[0]?.getArgumentsContent() ?? '';
      const [image, as, name] = from.split(/\s+/);
      expect(image === 'node:22-slim' || names.has(image ?? ''), `FROM ${from}`).toBe(true);
      if (as?.toUpperCase() === 'AS' && name) names.add(name);
    }
    expect(stages.length).toBeGreaterThan(0);
  });

  it('installs and type-checks with exactly the npm commands .ci/run runs, in the same order', () => {
    const ci = installAndBuildSteps(npmCommands(CI_RUN));
    const image = of(instructions, 'RUN').flatMap((r) => npmCommands(r.getArgumentsContent() ?? ''));
    expect(ci.length).toBeGreaterThan(0);
    expect(image).toEqual(ci);
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

  it('runs `filestore agent` with node as PID 1, in exec form, with no entrypoint wrapper', async () => {
    const cmd = last(runtime, 'CMD');
    expect(of(runtime, 'ENTRYPOINT')).toEqual([]);
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

  it('copies into the runtime stage everything the agent loads', () => {
    const copied = new Set(
      of(runtime, 'COPY')
        .filter((c) => (c as Copy).getFromFlag()?.getValue() === 'build')
        .flatMap((c) => (c.getArgumentsContent() ?? '').split(/\s+/).slice(0, -1))
        .map((src) => src.replace(/^\/app\//, '')),
    );
    const needed = new Set([...reachableFiles('cli/index.ts')].map((f) => f.split('/')[0] as string));
    for (const top of [...needed, 'migrations', 'node_modules', 'dist']) expect(copied, `COPY --from=build /app/${top}`).toContain(top);
  });
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
