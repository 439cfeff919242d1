/**
 * CLI start benchmark (issue 17): how long one `filestore` call takes, as users run it, next
 * to what Node itself takes to start and exit.
 *
 *   npm run bench:cli
 *
 * Every round runs, in turn (interleaved, so drifting machine load hits every row alike):
 *   - `node -e 0`                                 the peer: Node's own start and exit
 *   - `node cli/bin.js --version`                 the bin, from the bundle (dist/filestore.js)
 *   - `node cli/bin.js stat MOUNT:PATH`           one API call against a server in this process
 *   - `node dist/filestore.js --version`          the bundle without the bin (its freshness check)
 *   - `npx filestore --version`                   as users type it: npm's own start in front
 *   - `FILESTORE_CLI_SOURCES=1 node cli/bin.js --version`   the sources through tsx (before issue 17)
 * and reports each one's median wall time (spawn to exit) and median CPU time (user + sys of the
 * process and its children, from GNU time when /usr/bin/time exists: less sensitive to other
 * load than wall time). Then, once each, what `--version` and `stat` load: the bundle's chunks
 * and the package files (ESM and CommonJS) — counts that no load changes.
 *
 * The bundle is built first (`npm run build:cli`), and every bin run must say nothing on stderr:
 * the bin runs the sources instead when a source changed since the build (an edit meanwhile,
 * by someone else in this tree): the round is then rebuilt and run again.
 *
 * Environment: BENCH_CLI_ROUNDS (9), BENCH_DATABASE_URL
 * (postgres://postgres@127.0.0.1:5432/filestore_bench), REDIS_URL (inline), TMPDIR.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { bundleCli } from '../cli/bundle.ts';
import { hashToken } from '../shared/api/auth.ts';
import { serveApi } from '../shared/api/serve.ts';
import { createMount, deleteMount } from '../shared/catalogue/mounts.ts';
import { FilestoreClient } from '../shared/client/index.ts';
import { ensureDatabase } from '../shared/db/ensure-database.ts';
import { createFilestore } from '../shared/runtime.ts';
import { machineFacts } from './support/machine.ts';
import { envInt, fmt, formatTable } from './support/measure.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'cli/bin.js');
const BUNDLE = join(ROOT, 'dist/filestore.js');
const GNU_TIME = '/usr/bin/time';
const TARGET_MS = 150;

interface Sample {
  wallMs: number;
  /** user + sys of the process and the children it waited for; NaN without GNU time. */
  cpuMs: number;
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Case {
  name: string;
  argv: string[];
  env?: Record<string, string>;
  /** A run of the bin (must not print anything on stderr: else it ran the sources). */
  bin: boolean;
  /** What stdout must hold. */
  expect: RegExp;
}

const config = {
  databaseUrl: process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/filestore_bench',
  redisUrl: process.env.REDIS_URL ?? 'inline',
  rounds: envInt('BENCH_CLI_ROUNDS', 9),
};

const tempDir = await mkdtemp(join(os.tmpdir(), 'filestore-bench-cli-'));
const progress = (line: string) => console.log(`· ${line}`);

progress('building the CLI bundle (npm run build:cli)…');
await bundleCli();
await ensureDatabase(config.databaseUrl);
const core = await createFilestore({ databaseUrl: config.databaseUrl, redisUrl: config.redisUrl, migrate: true, log: (l) => console.error(`[filestore] ${l}`) });
const token = `fs_${randomBytes(32).toString('base64url')}`;
const server = await serveApi({ core, host: '127.0.0.1', port: 0, tokens: [{ name: 'bench-cli', sha256: hashToken(token), scopes: ['filestore:write'] }], log: () => {} });
const mountRoot = join(tempDir, 'mount');
await mkdir(mountRoot);
const mount = await createMount(core.pool, { key: `bench-cli-${randomBytes(4).toString('hex')}`, kind: 'local', rootPath: mountRoot });
const env: NodeJS.ProcessEnv = { ...process.env, FILESTORE_URL: server.url, FILESTORE_TOKEN: token };
delete env.FILESTORE_CLI_SOURCES;
delete env.NODE_OPTIONS;

try {
  await new FilestoreClient({ baseUrl: server.url, token }).putFile({ mountId: mount.key, path: 'docs/readme.txt', body: Buffer.from('hello from bench:cli\n') });
  console.log('Machine');
  for (const [label, value] of await machineFacts(core.pool, tempDir, config.redisUrl)) console.log(`  ${label}: ${value}`);

  const cases: Case[] = [
    { name: 'node -e 0 (peer)', argv: ['node', '-e', '0'], bin: false, expect: /^$/ },
    { name: 'node cli/bin.js --version', argv: ['node', BIN, '--version'], bin: true, expect: /^\d+\.\d+\.\d+/ },
    { name: 'node cli/bin.js stat MOUNT:PATH', argv: ['node', BIN, 'stat', `${mount.key}:docs/readme.txt`], bin: true, expect: /^sha256 /m },
    { name: 'node dist/filestore.js --version', argv: ['node', BUNDLE, '--version'], bin: true, expect: /^\d+\.\d+\.\d+/ },
    { name: 'npx filestore --version', argv: ['npx', 'filestore', '--version'], bin: true, expect: /^\d+\.\d+\.\d+/ },
    { name: 'sources: FILESTORE_CLI_SOURCES=1 node cli/bin.js --version', argv: ['node', BIN, '--version'], env: { FILESTORE_CLI_SOURCES: '1' }, bin: true, expect: /^\d+\.\d+\.\d+/ },
  ];
  const samples = new Map<string, Sample[]>(cases.map((c) => [c.name, []]));
  for (let r = 0; r < config.rounds; ) {
    progress(`round ${r + 1}/${config.rounds}`);
    const round: Array<[Case, Sample]> = [];
    for (const c of cases) round.push([c, await timed(c.argv, { ...env, ...c.env })]);
    const stale = round.find(([c, s]) => c.bin && s.stderr !== '');
    for (const [c, s] of round) if (s.code !== 0 || !c.expect.test(s.stdout)) throw new Error(`${c.name}: exit ${s.code}, stdout ${JSON.stringify(s.stdout)}, stderr ${JSON.stringify(s.stderr)}`);
    if (stale) {
      progress(`  ${stale[0].name} said ${JSON.stringify(stale[1].stderr.trim())}: rebuilding the bundle and running the round again`);
      await bundleCli();
      continue;
    }
    for (const [c, s] of round) samples.get(c.name)?.push(s);
    r++;
  }

  const med = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 === 1 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
  };
  const wall = (name: string) => med((samples.get(name) ?? []).map((s) => s.wallMs));
  const cpu = (name: string) => med((samples.get(name) ?? []).map((s) => s.cpuMs));
  const peer = cases[0]?.name as string;
  const targeted = new Set(['node cli/bin.js --version', 'node cli/bin.js stat MOUNT:PATH']);
  console.log(`\nEvery round, wall ms:`);
  for (const c of cases) console.log(`  ${c.name}: ${(samples.get(c.name) ?? []).map((s) => fmt(s.wallMs, 0)).join(', ')}`);
  console.log(`\nMedian of ${config.rounds} rounds (peer: node -e 0; CPU = user + sys of the process and its children)`);
  console.log(
    formatTable(
      ['command', 'wall ms', 'peer wall ms', 'over peer ms', 'CPU ms', 'peer CPU ms', 'target', 'pass/fail'],
      cases.map((c) => [
        c.name,
        fmt(wall(c.name), 0),
        fmt(wall(peer), 0),
        c.name === peer ? '—' : fmt(wall(c.name) - wall(peer), 0),
        fmt(cpu(c.name), 0),
        fmt(cpu(peer), 0),
        targeted.has(c.name) ? `< ${TARGET_MS} ms` : '—',
        targeted.has(c.name) ? (wall(c.name) < TARGET_MS ? 'pass' : 'FAIL') : '—',
      ]),
    ),
  );
  const npxOverhead = wall('npx filestore --version') - wall('node cli/bin.js --version');
  console.log(`\nnpx's own overhead (npx filestore --version − node cli/bin.js --version): ${fmt(npxOverhead, 0)} ms wall, ${fmt(cpu('npx filestore --version') - cpu('node cli/bin.js --version'), 0)} ms CPU`);
  console.log(`The bin's freshness check (node cli/bin.js --version − node dist/filestore.js --version): ${fmt(wall('node cli/bin.js --version') - wall('node dist/filestore.js --version'), 1)} ms wall`);

  console.log('\nWhat a command loads (files; one run each, the same on any load)');
  const rows: string[][] = [];
  for (const c of cases.slice(1, 3)) {
    const loaded = await loads(c.argv.slice(1));
    rows.push([c.name, String(loaded.chunks), String(loaded.packageFiles), loaded.packages.join(' ') || '—']);
  }
  console.log(formatTable(['command', 'bundle files (dist/)', 'package files (node_modules/)', 'packages'], rows));
  console.log(`\nLoad average (1, 5, 15 min) at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(', ')}`);
} finally {
  await server.close();
  await dropMount(mount.id);
  await core.close();
  await rm(tempDir, { recursive: true, force: true });
}

/** Runs `argv` to its exit (in the repository, as a user there would), timing it. */
function timed(argv: string[], childEnv: NodeJS.ProcessEnv): Promise<Sample> {
  const cpuFile = join(tempDir, `cpu-${randomBytes(4).toString('hex')}`);
  const gnu = existsSync(GNU_TIME);
  const [cmd, ...args] = gnu ? [GNU_TIME, '-f', '%U %S', '-o', cpuFile, ...argv] : argv;
  const t0 = performance.now();
  const child = spawn(cmd as string, args, { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      const wallMs = performance.now() - t0;
      const cpuMs = gnu
        ? readFile(cpuFile, 'utf8').then((s) => {
            const [user, sys] = (s.trim().split('\n').pop() ?? '').split(' ').map(Number);
            return ((user ?? Number.NaN) + (sys ?? Number.NaN)) * 1000;
          })
        : Promise.resolve(Number.NaN);
      cpuMs.then((cpu) => resolve({ wallMs, cpuMs: cpu, code, stdout, stderr }), reject);
    });
  });
}

/**
 * What `node ARGS…` loads: an ES module hook (module.register) logs every URL resolved, and
 * Node's CommonJS cache is listed at exit.
 */
async function loads(args: string[]): Promise<{ chunks: number; packageFiles: number; packages: string[] }> {
  const hooks = join(tempDir, 'load-hooks.mjs');
  const entry = join(tempDir, 'load-trace.mjs');
  await writeFile(hooks, "export async function resolve(s, c, next) { const r = await next(s, c); process.stderr.write(`LOADED ${r.url}\\n`); return r; }\n");
  await writeFile(
    entry,
    `import { register, createRequire } from 'node:module';\nregister(${JSON.stringify(new URL(`file://${hooks}`).href)});\n` +
      "process.on('exit', () => { for (const f of Object.keys(createRequire(import.meta.url)('module')._cache)) process.stderr.write(`LOADED file://${f}\\n`); });\n",
  );
  const run = await timed(['node', '--import', entry, ...args], env);
  const files = new Set([...run.stderr.matchAll(/^LOADED (file:\/\/\S+)$/gm)].map((m) => fileURLToPath(m[1] as string)));
  const inPackages = [...files].filter((f) => f.includes('/node_modules/'));
  const packages = [...new Set(inPackages.map((f) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f)?.[1] ?? '?'))].sort();
  return { chunks: [...files].filter((f) => f.startsWith(join(ROOT, 'dist/'))).length, packageFiles: inPackages.length, packages };
}

/** Removes the bench mount's rows. */
async function dropMount(mountId: string): Promise<void> {
  try {
    await deleteMount(core.pool, mountId);
  } catch (err) {
    console.error(`cleanup: could not delete mount ${mountId}: ${(err as Error).message}`);
  }
}
