import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { WALKER_FILE } from '../shared/backends/local/index.ts';
import { MIGRATIONS } from '../shared/db/index-migrate.ts';
import { bundleOptions, manifestVersion, walkerBundleOptions, type BundleTarget } from './build-options.ts';

/**
 * Plain JavaScript for long-running processes (`npm run build`, cli/build.ts): the CLI in
 * dist/ is what `npm start`, `npm run agent`, `npm run filestore:reconcile` and the agent
 * image run. Loading the TypeScript through tsx instead keeps tsx's loader thread and its
 * caches for the life of the process: ~35 MB of RSS (docs/benchmarks.md, Audits).
 * `npx filestore` (cli/bin.js) still loads the sources through tsx: no build step for the
 * short commands, nothing stale after an edit.
 *
 * A bundle directory carries everything its code reads besides packages: the migrations
 * (migrations/, for `migrate` and every process that migrates at start) and, for the local
 * processes, the walker's code (walker.cjs). So dist/ runs without the sources beside it, and
 * without esbuild: the agent image holds dist/ and production node_modules only.
 */
export const DIST_DIR = fileURLToPath(new URL('../dist', import.meta.url));

const SOURCES = fileURLToPath(new URL('..', import.meta.url));

/**
 * Bundles each entry (output name → TypeScript source) into `outdir` with the build's options
 * for `target` (cli/build-options.ts), and puts beside them what they read at run time.
 * Each file is written aside and renamed into place, the entries last: a process starting from
 * `outdir` while another build runs (`npm run agent` beside `npm start`, tests in parallel)
 * never reads a file half written, nor an entry whose chunks are not there yet.
 * Returns what went into it: the package's files the code was built from (relative to the
 * package root) and the migrations copied beside it.
 */
export async function bundle(entries: Record<string, string>, outdir: string, target: BundleTarget = 'local'): Promise<BuiltFrom> {
  const version = manifestVersion();
  const [code, walker] = await Promise.all([
    build({ ...bundleOptions(target, entries, outdir, version), absWorkingDir: SOURCES, write: false, metafile: true }),
    target === 'local' ? build({ ...walkerBundleOptions(version), absWorkingDir: SOURCES, write: false, metafile: true }) : null,
  ]);
  const entryFiles = new Set(Object.keys(entries).map((name) => join(outdir, `${name}${target === 'lambda' ? '.mjs' : '.js'}`)));
  const files = code.outputFiles.map((f) => ({ path: f.path, contents: f.contents }));
  files.sort((a, b) => Number(entryFiles.has(a.path)) - Number(entryFiles.has(b.path)));
  const walkerCode = walker?.outputFiles[0];
  if (walkerCode) files.unshift({ path: join(outdir, WALKER_FILE), contents: walkerCode.contents });
  const migrations = join(outdir, MIGRATIONS);
  const sql = (await readdir(join(SOURCES, MIGRATIONS))).filter((f) => f.endsWith('.sql'));
  for (const name of sql) files.unshift({ path: join(migrations, name), contents: await readFile(join(SOURCES, MIGRATIONS, name)) });
  await mkdir(migrations, { recursive: true });
  for (const file of files) await writeAside(file.path, file.contents);
  // A migration the sources no longer have (another branch's) must not be applied from here.
  for (const name of await readdir(migrations)) {
    if (name.endsWith('.sql') && !sql.includes(name)) await rm(join(migrations, name), { force: true });
  }
  const inputs = new Set([...Object.keys(code.metafile.inputs), ...Object.keys(walker?.metafile.inputs ?? {})]);
  return {
    sources: [...inputs].filter((f) => !f.startsWith('node_modules/') && !f.includes(':')).sort(),
    migrations: sql.map((name) => join(MIGRATIONS, name)).sort(),
  };
}

/** What a bundle was built from: source files and migrations, relative to the package root. */
export interface BuiltFrom {
  sources: string[];
  migrations: string[];
}

async function writeAside(path: string, contents: Uint8Array | string): Promise<void> {
  const aside = `${path}.${process.pid}-${randomUUID().slice(0, 8)}.tmp`;
  await writeFile(aside, contents);
  await rename(aside, path);
}

/** Where `npm run build` writes the Lambda bundles: one `<name>.mjs` per handler, the migrations beside them. */
export const LAMBDA_DIST_DIR = join(DIST_DIR, 'lambdas');

/**
 * The Lambda entry points: every lambdas/*.ts (not lambdas/support/, what they share), by
 * output name — lambdas/api.ts is bundled as api.mjs. Found by listing, so a new handler is
 * built without touching the build.
 */
export async function lambdaEntries(): Promise<Record<string, string>> {
  const dir = join(SOURCES, 'lambdas');
  const names = (await readdir(dir, { withFileTypes: true })).filter((d) => d.isFile() && d.name.endsWith('.ts') && !d.name.endsWith('.d.ts')).map((d) => d.name);
  return Object.fromEntries(names.sort().map((n) => [n.slice(0, -'.ts'.length), join(dir, n)]));
}

/** The Lambda bundles (cli/build-options.ts target `lambda`), each loadable from a directory holding it and migrations/. */
export async function bundleLambdas(outdir: string = LAMBDA_DIST_DIR): Promise<void> {
  await bundle(await lambdaEntries(), outdir, 'lambda');
}

/**
 * Where the CLI bundle records what it was built from (cli/bin.js reads it): `builtAt`, when
 * the build began (epoch ms), and the files whose change makes the bundle stale — the sources
 * it holds (esbuild's inputs outside node_modules), the build's own code and package.json, the
 * migrations and their directory (one added or removed changes it).
 */
export const CLI_BUILT_FROM = 'filestore.built-from.json';

/** The build's own files: a change to them changes every bundle. */
const BUILD_FILES = ['package.json', 'cli/bundle.ts', 'cli/build-options.ts'];

/**
 * The CLI, `node dist/filestore.js …` (and `filestore`, cli/bin.js), with its walker and
 * migrations beside it, and the record of what it was built from (CLI_BUILT_FROM), written
 * last: the bin takes the bundle as current only once all of it is in place.
 */
export async function bundleCli(outdir: string = DIST_DIR): Promise<void> {
  const builtAt = Date.now();
  const from = await bundle({ filestore: join(SOURCES, 'cli/index.ts') }, outdir);
  const files = [...new Set([...from.sources, ...BUILD_FILES, MIGRATIONS, ...from.migrations])].sort();
  await writeAside(join(outdir, CLI_BUILT_FROM), `${JSON.stringify({ builtAt, files }, null, 1)}\n`);
}
