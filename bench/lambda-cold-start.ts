/**
 * Lambda cold start: what a new container spends on our code before its first invocation can
 * do work, per bundle, under Node 24 (the Lambda runtime's major). Each run is a fresh process
 * loading the bundle alone from an empty directory, as Lambda does:
 *
 *   import  `await import('<name>.mjs')`: parsing and evaluating the bundle.
 *   wiring  `await lambdaCore()` right after (the handlers built on the core): configuration,
 *           wireFilestore, EmfMetrics. FILESTORE_QUEUE_PREFIX is set, so the pool makes no
 *           query; ioredis connects in the background: connections are left out as far as
 *           they can be. Measured on the bundle built with lambdaCore exported beside
 *           `handler` (the same modules, one instance).
 *   process from spawn to exit of `node <bundle loader>`, against the peer `node -e 0`
 *           (Node's own start, which Lambda's runtime pays as well).
 *
 * Target: import + wiring under 400 ms (median). Figures are medians (and max) of BENCH_RUNS.
 *
 *   npm run bench:cold-start
 *
 * Environment: BENCH_RUNS (7), BENCH_NODE (default .cache/node24/node_modules/.bin/node:
 * `npm install --prefix .cache/node24 --no-save node@24`), DATABASE_URL
 * (postgres://postgres@127.0.0.1:5432/filestore_test), REDIS_URL (redis://127.0.0.1:6379/0).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { bundleOptions } from '../cli/build-options.ts';
import { bundleLambdas, lambdaEntries } from '../cli/bundle.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const NODE = process.env.BENCH_NODE ?? path.join(ROOT, '.cache/node24/node_modules/.bin/node');
const TARGET_MS = 400;

const LOADER = `
const t0 = performance.now();
const m = await import(process.env.BUNDLE_URL);
const t1 = performance.now();
let wiring = null;
if (typeof m.lambdaCore === 'function') {
  const w0 = performance.now();
  await m.lambdaCore();
  wiring = performance.now() - w0;
}
process.stdout.write('\\n@@RESULT@@' + JSON.stringify({ started: t0, import: t1 - t0, wiring }) + '\\n');
process.exit(0);
`;

interface Sample {
  started: number;
  import: number;
  wiring: number | null;
  process: number;
}

async function timed(args: string[], o: { cwd: string; env: NodeJS.ProcessEnv }): Promise<{ ms: number; stdout: string }> {
  const t0 = performance.now();
  const { stdout } = await run(NODE, args, { ...o, maxBuffer: 16 * 1024 * 1024 });
  return { ms: performance.now() - t0, stdout };
}

async function sample(dir: string, file: string, env: NodeJS.ProcessEnv): Promise<Sample> {
  const { ms, stdout } = await timed(['--input-type=module', '-e', LOADER], { cwd: dir, env: { ...env, BUNDLE_URL: new URL(`file://${path.join(dir, file)}`).href } });
  const marker = stdout.lastIndexOf('@@RESULT@@');
  if (marker === -1) throw new Error(`${file}: no result\n${stdout.slice(-1000)}`);
  return { ...(JSON.parse(stdout.slice(marker + 10)) as Omit<Sample, 'process'>), process: ms };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)] as number;
};
const fmt = (xs: number[]) => (xs.length ? `${median(xs).toFixed(0).padStart(5)} (max ${Math.max(...xs).toFixed(0)})` : '    -');

async function main(): Promise<void> {
  if (!existsSync(NODE)) throw new Error(`no Node at ${NODE}: npm install --prefix .cache/node24 --no-save node@24 (or set BENCH_NODE)`);
  const nodeVersion = (await run(NODE, ['--version'])).stdout.trim();
  const work = await mkdtemp(path.join(os.tmpdir(), 'filestore-cold-start-'));
  try {
    const built = path.join(work, 'built');
    await bundleLambdas(built);
    const entries = await lambdaEntries();
    // Handlers on the core: the same entry with lambdaCore exported beside its handler.
    const onCore: string[] = [];
    for (const [name, source] of Object.entries(entries)) {
      if (!(await readFile(source, 'utf8')).includes('support/powertools.ts')) continue;
      onCore.push(name);
      await build({
        ...bundleOptions('lambda', {}, built),
        entryPoints: undefined,
        outdir: undefined,
        outfile: path.join(built, `${name}.wiring.mjs`),
        sourcemap: false,
        stdin: {
          contents: `export { handler } from ${JSON.stringify(source)}; export { lambdaCore } from ${JSON.stringify(path.join(ROOT, 'lambdas/support/core.ts'))};`,
          resolveDir: ROOT,
          loader: 'ts',
          sourcefile: `${name}.wiring.ts`,
        },
      });
    }
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      AWS_REGION: 'eu-west-1',
      DATABASE_URL: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/filestore_test',
      REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0',
      FILESTORE_COMMAND_SECRET: randomBytes(32).toString('hex'),
      FILESTORE_QUEUE_PREFIX: 'filestore:bench-cold-start',
      FILESTORE_API_TOKENS: '[]',
      POWERTOOLS_METRICS_DISABLED: 'true',
    };

    const peer: number[] = [];
    for (let i = 0; i < RUNS; i++) peer.push((await timed(['-e', '0'], { cwd: work, env })).ms);

    console.log(`Lambda cold start, ${nodeVersion}, ${RUNS} runs each, medians in ms (max)`);
    console.log(`peer: node -e 0, process ${fmt(peer)}`);
    console.log(`${'bundle'.padEnd(12)} ${'MB'.padStart(5)}  ${'import'.padEnd(16)} ${'wiring'.padEnd(16)} ${'import+wiring'.padEnd(16)} ${'process'.padEnd(16)} target`);
    for (const name of Object.keys(entries)) {
      const dir = path.join(work, `run-${name}`);
      await cp(path.join(built, 'migrations'), path.join(dir, 'migrations'), { recursive: true });
      await cp(path.join(built, `${name}.mjs`), path.join(dir, `${name}.mjs`));
      if (onCore.includes(name)) await cp(path.join(built, `${name}.wiring.mjs`), path.join(dir, `${name}.wiring.mjs`));
      const shipped: Sample[] = [];
      const wired: Sample[] = [];
      for (let i = 0; i < RUNS; i++) {
        shipped.push(await sample(dir, `${name}.mjs`, env));
        if (onCore.includes(name)) wired.push(await sample(dir, `${name}.wiring.mjs`, env));
      }
      const imports = shipped.map((s) => s.import);
      const wiring = wired.map((s) => s.wiring ?? 0);
      const total = shipped.map((s, i) => s.import + (wiring[i] ?? 0));
      const size = (await readFile(path.join(built, `${name}.mjs`))).byteLength / 1e6;
      console.log(
        `${name.padEnd(12)} ${size.toFixed(1).padStart(5)}  ${fmt(imports).padEnd(16)} ${fmt(wiring).padEnd(16)} ${fmt(total).padEnd(16)} ${fmt(shipped.map((s) => s.process)).padEnd(16)} ${median(total) < TARGET_MS ? 'ok' : 'OVER'} (< ${TARGET_MS})`,
      );
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

await main();
