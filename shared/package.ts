import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Filestore's version and its own files (the migrations, the walker's code), found from the
 * running code. That code is either the TypeScript sources (through tsx) or a bundle made by
 * the build (cli/build-options.ts), which may lie anywhere: a Lambda's bundle sits in a
 * directory with no package.json above it. So nothing here runs at import, the version of a
 * bundle is the one the build wrote into it, and package.json is read only when asked, and only
 * when running from the sources.
 */

// The build replaces this identifier with the version (cli/build-options.ts VERSION_DEFINE);
// running from the sources it is not declared at all, which `typeof` tells without throwing.
declare const __FILESTORE_VERSION__: string | undefined;

/** Whether this code runs from a bundle made by the build (its files are then shipped beside it). */
export function runsFromBundle(): boolean {
  return typeof __FILESTORE_VERSION__ === 'string';
}

let version: string | undefined;
let root: string | undefined;

/** Filestore's version: written into a bundle by the build, read from package.json by the sources. */
export function packageVersion(): string {
  if (typeof __FILESTORE_VERSION__ === 'string') return __FILESTORE_VERSION__;
  return (version ??= readManifest(packageRoot()).version);
}

/** The package's root directory (the sources'; a bundle needs none). */
export function packageRoot(): string {
  return (root ??= findPackageRoot(dirname(fileURLToPath(import.meta.url))));
}

/**
 * A file the build ships with a bundle (cli/bundle.ts): beside the bundle's own JavaScript when
 * running from one, else at `inSources` (relative to the package root) in the sources.
 */
export function shippedPath(name: string, inSources: string = name): string {
  return runsFromBundle() ? fileURLToPath(new URL(name, import.meta.url)) : join(packageRoot(), inSources);
}

function readManifest(dir: string): { name?: string; version: string } {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version: string };
}

/** The nearest directory at or above `from` whose package.json is Filestore's. */
function findPackageRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    try {
      if (readManifest(dir).name === 'filestore') return dir;
    } catch {
      // no package.json here (or not JSON): look further up
    }
    if (dirname(dir) === dir) {
      // Reached from a bundle made without the build's options, which write the version in.
      throw new Error(`Filestore's package.json was not found above ${from}: bundle with the options of cli/build-options.ts`);
    }
  }
}
