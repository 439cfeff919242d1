import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { WALKER_FILE } from '../shared/backends/local/walker.ts';
import { MIGRATIONS } from '../shared/db/migrate.ts';
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
 * Each file is written aside and renamed into place: a process starting from `outdir` while
 * another build runs (`npm run agent` beside `npm start`, tests in parallel) never reads a
 * file half written.
 */
export async function bundle(entries: Record<string, string>, outdir: string, target: BundleTarget = 'local'): Promise<void> {
  const version = manifestVersion();
  const [code, walker] = await Promise.all([
    build({ ...bundleOptions(target, entries, outdir, version), write: false }),
    target === 'local' ? build({ ...walkerBundleOptions(version), write: false }) : null,
  ]);
  const files = code.outputFiles.map((f) => ({ path: f.path, contents: f.contents }));
  const walkerCode = walker?.outputFiles[0];
  if (walkerCode) files.push({ path: join(outdir, WALKER_FILE), contents: walkerCode.contents });
  const migrations = join(outdir, MIGRATIONS);
  const sql = (await readdir(join(SOURCES, MIGRATIONS))).filter((f) => f.endsWith('.sql'));
  for (const name of sql) files.push({ path: join(migrations, name), contents: await readFile(join(SOURCES, MIGRATIONS, name)) });
  await mkdir(migrations, { recursive: true });
  for (const file of files) {
    const aside = `${file.path}.${process.pid}-${randomUUID().slice(0, 8)}.tmp`;
    await writeFile(aside, file.contents);
    await rename(aside, file.path);
  }
  // A migration the sources no longer have (another branch's) must not be applied from here.
  for (const name of await readdir(migrations)) {
    if (name.endsWith('.sql') && !sql.includes(name)) await rm(join(migrations, name), { force: true });
  }
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

/** The CLI, `node dist/filestore.js …`, with its walker and migrations beside it. */
export function bundleCli(): Promise<void> {
  return bundle({ filestore: join(SOURCES, 'cli/index.ts') }, DIST_DIR);
}
