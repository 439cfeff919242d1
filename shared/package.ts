import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Filestore's own files (package.json, migrations, the walker process's source), found from
 * the running code. That code is either the TypeScript sources (through tsx) or a bundle of
 * them in dist/ (`npm run build`), at different depths, so paths start at the package root
 * rather than at a module's own location.
 */
export const PACKAGE_ROOT: string = findPackageRoot(dirname(fileURLToPath(import.meta.url)));

export const PACKAGE_VERSION: string = readManifest(PACKAGE_ROOT).version;

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
    if (dirname(dir) === dir) throw new Error(`Filestore's package.json was not found above ${from}`);
  }
}
