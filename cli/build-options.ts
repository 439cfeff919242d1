import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { BuildOptions } from 'esbuild';

/**
 * The esbuild options of every Filestore bundle, in one place: the CLI and its walker
 * processes (`npm run build`, cli/bundle.ts), the Lambda entry points (lambdas/), and the CDK
 * app that deploys them. What the tests load is then what runs.
 *
 * Build tooling, not application code: it imports nothing from shared/ that runs, and the
 * core never imports it (shared/ learns the version from the `define` below).
 */

/**
 * Where a bundle runs. `local`: the long-running processes (CLI, agent, `npm start`) on the
 * machines' Node 20, inside the package (packages stay imports of node_modules). `lambda`: one
 * self-contained file per entry for AWS Lambda (nodejs22.x and later), loadable from a
 * directory holding nothing else.
 */
export type BundleTarget = 'local' | 'lambda';

export const NODE_TARGETS: Readonly<Record<BundleTarget, string>> = { local: 'node20', lambda: 'node22' };

/**
 * The identifier the build replaces with Filestore's version (a string literal). shared/package.ts
 * reads it; running from the sources it is undeclared, and the version comes from package.json.
 */
export const VERSION_DEFINE = '__FILESTORE_VERSION__';

// Build tooling is never part of a bundle: the walker builds its code with esbuild only when it
// runs from the sources (under tsx), and a bundle loads the walker's built file instead.
const TOOLING = ['esbuild', 'tsx'];
// Native accelerators a single-file bundle cannot carry (their binaries are files of their
// own); the packages that try them fall back to JavaScript when they are absent. msgpackr
// (BullMQ's encoding) would otherwise probe the C library at import by reading /proc/self/exe.
const NATIVE_OPTIONAL = ['msgpackr-extract'];

// CommonJS packages bundled into an ES module call `require` for Node's built-ins; an ES module
// has no `require`, so each Lambda bundle makes one (esbuild issue #1921).
const REQUIRE_SHIM = "import { createRequire as __filestoreCreateRequire } from 'node:module'; const require = __filestoreCreateRequire(import.meta.url);";

/** Filestore's version, from package.json (the build runs from the sources). */
export function manifestVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return manifest.version;
}

/**
 * The options bundling `entries` (output name → TypeScript source) into `outdir` for `target`.
 * Output names are flat (no `/`): files a bundle finds beside itself (shared/package.ts
 * `shippedPath`: the migrations, the walker's code) are looked up beside each output file.
 */
export function bundleOptions(target: BundleTarget, entries: Record<string, string>, outdir: string, version = manifestVersion()): BuildOptions {
  for (const name of Object.keys(entries)) if (name.includes('/')) throw new Error(`bundle entry "${name}": output names are flat (the files shipped beside a bundle are found beside it)`);
  const common: BuildOptions = {
    entryPoints: entries,
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: NODE_TARGETS[target],
    // As tsx runs the sources: class and function names as written (errors carry them).
    keepNames: true,
    // Stack traces map back to the sources under `node --enable-source-maps`; the maps carry
    // positions only (the sources stay in the repository).
    sourcemap: 'linked',
    sourcesContent: false,
    define: { [VERSION_DEFINE]: JSON.stringify(version) },
    external: TOOLING,
    logLevel: 'warning',
  };
  if (target === 'local') {
    // Packages stay imports of node_modules (so `outdir` lies inside the package), and what the
    // CLI imports only when a command runs stays in chunks loaded then, as with the sources.
    return { ...common, packages: 'external', splitting: true };
  }
  return {
    ...common,
    // Everything in one file, the AWS SDK included: the version the tests ran against, not the
    // one the Lambda runtime happens to carry. `.mjs`: an ES module with no package.json around.
    outExtension: { '.js': '.mjs' },
    mainFields: ['module', 'main'],
    external: [...TOOLING, ...NATIVE_OPTIONAL],
    banner: { js: REQUIRE_SHIM },
  };
}

/** The walker process's entry (shared/backends/local/walker.ts runs it on `node -`). */
export const WALKER_ENTRY = fileURLToPath(new URL('../shared/backends/local/walker-main.ts', import.meta.url));

/**
 * The walker's code: one CommonJS script with everything in it (it is handed to `node -` on
 * stdin, with no node_modules to resolve from), for the local processes' Node. No source map:
 * a script read from stdin has no place for one beside it.
 */
export function walkerBundleOptions(version = manifestVersion()): BuildOptions {
  return {
    entryPoints: [WALKER_ENTRY],
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: NODE_TARGETS.local,
    keepNames: true,
    define: { [VERSION_DEFINE]: JSON.stringify(version) },
    external: TOOLING,
    logLevel: 'warning',
  };
}
