import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';
import { bundleOptions } from '../cli/build-options.ts';

/**
 * The Lambda code the stack deploys, bundled here with the build's own esbuild options
 * (cli/build-options.ts `bundleOptions('lambda', …)`, the ones `npm run build` uses for
 * dist/lambdas/<name>.mjs): what deploys is the bundle the handler tests load. Each function
 * gets a directory of its own holding only its bundle (and source map) and, for migrate, the
 * migrations shipped beside it. Bundling runs in-process (esbuild), so synth needs no Docker.
 */

const SOURCES = fileURLToPath(new URL('..', import.meta.url));

/** The Lambda entries the stack deploys (lambdas/<name>.ts), one function each. */
export const LAMBDA_NAMES = ['api', 'authorizer', 's3-events', 'audit', 'reconcile', 'maintenance', 'migrate'] as const;
export type LambdaName = (typeof LAMBDA_NAMES)[number];

/** Functions that read files shipped beside their bundle: migrate applies migrations/. */
const SHIPPED: Partial<Record<LambdaName, string[]>> = { migrate: ['migrations'] };

export interface LambdaBundles {
  /** The asset directory of each function. */
  readonly dirs: Readonly<Record<LambdaName, string>>;
}

/**
 * Bundles every entry into `<root>/<name>/` (a fresh temporary directory by default, removed
 * when the process exits: synthesis copies each into cdk.out as an asset first).
 */
export function bundleLambdaAssets(root?: string): LambdaBundles {
  const base = root ?? mkdtempSync(path.join(os.tmpdir(), 'filestore-cdk-lambdas-'));
  if (!root) process.once('exit', () => rmSync(base, { recursive: true, force: true }));
  const dirs = {} as Record<LambdaName, string>;
  for (const name of LAMBDA_NAMES) {
    const dir = path.join(base, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    buildSync(bundleOptions('lambda', { [name]: path.join(SOURCES, 'lambdas', `${name}.ts`) }, dir));
    for (const shipped of SHIPPED[name] ?? []) {
      const from = path.join(SOURCES, shipped);
      cpSync(from, path.join(dir, shipped), { recursive: true, filter: (f) => f === from || f.endsWith('.sql') });
    }
    dirs[name] = dir;
  }
  return { dirs };
}

/** The files of a bundle directory, relative to it, sorted (tests compare them). */
export function bundleFiles(dir: string): string[] {
  return (readdirSync(dir, { recursive: true, withFileTypes: true }) as import('node:fs').Dirent[])
    .filter((d) => d.isFile())
    .map((d) => path.relative(dir, path.join(d.parentPath, d.name)))
    .sort();
}
