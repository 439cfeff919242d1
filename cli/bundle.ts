import { randomUUID } from 'node:crypto';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';
import { PACKAGE_ROOT } from '../shared/package.ts';

/**
 * Plain JavaScript for long-running processes (`npm run build`, cli/build.ts): the CLI in
 * dist/ is what `npm start`, `npm run agent`, `npm run filestore:reconcile` and the agent
 * image run. Loading the TypeScript through tsx instead keeps tsx's loader thread and its
 * caches for the life of the process: ~35 MB of RSS (docs/benchmarks.md, Audits).
 * `npx filestore` (cli/bin.js) still loads the sources through tsx: no build step for the
 * short commands, nothing stale after an edit.
 */
export const DIST_DIR = join(PACKAGE_ROOT, 'dist');

/**
 * Bundles each entry (output name → TypeScript source) into `outdir`: packages stay imports
 * of node_modules (so `outdir` must lie inside the package), and what the CLI imports only
 * when a command runs stays in chunks loaded then (code splitting), as with the sources.
 * Each file is written aside and renamed into place: a process starting from `outdir` while
 * another build runs (`npm run agent` beside `npm start`, tests in parallel) never reads a
 * file half written.
 */
export async function bundle(entries: Record<string, string>, outdir: string): Promise<void> {
  const { outputFiles } = await build({
    entryPoints: entries,
    outdir,
    write: false,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    // As tsx runs the sources: class and function names as written (errors carry them).
    keepNames: true,
    logLevel: 'warning',
  });
  await mkdir(outdir, { recursive: true });
  for (const file of outputFiles) {
    const aside = `${file.path}.${process.pid}-${randomUUID().slice(0, 8)}.tmp`;
    await writeFile(aside, file.contents);
    await rename(aside, file.path);
  }
}

/** The CLI, `node dist/filestore.js …`. */
export function bundleCli(): Promise<void> {
  return bundle({ filestore: join(PACKAGE_ROOT, 'cli/index.ts') }, DIST_DIR);
}
