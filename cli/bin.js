#!/usr/bin/env node
// The `filestore` command (package.json "bin", `npx filestore`). It runs the CLI bundle,
// dist/filestore.js (`npm run build`, or `npm run build:cli`; `npm install` in a clone builds
// it, package.json "prepare"): plain JavaScript, each command's code in a chunk loaded only
// when that command runs, so a command starts in about the time Node itself takes.
//
// The TypeScript sources run instead, through tsx (a development tool, ~0.5 s more per call):
// - FILESTORE_CLI_SOURCES=1: always;
// - FILESTORE_CLI_SOURCES unset: when the bundle is missing or stale — a file it was built
//   from (dist/filestore.built-from.json, cli/bundle.ts) has changed or gone since the build
//   began — saying so on stderr, so an edit is never answered by the code before it;
// - FILESTORE_CLI_SOURCES=0: never (the bundle as it is, not checked: the tests, which build
//   it once per run while other edits may go on).
import { readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Paths as strings: a URL object per file checked costs more than the stat itself.
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const BUNDLE = new URL('../dist/filestore.js', import.meta.url);
const BUILT_FROM = `${ROOT}dist/filestore.built-from.json`;
const REBUILD = 'npm run build:cli';

const mode = process.env.FILESTORE_CLI_SOURCES ?? '';
if (mode !== '' && mode !== '0' && mode !== '1') {
  process.stderr.write(`filestore: FILESTORE_CLI_SOURCES must be 1 (run the sources) or 0 (run the bundle), not ${JSON.stringify(mode)} (CONFIG_ERROR)\n`);
  process.exit(2);
}

if (mode === '1') {
  await runSources(null);
} else if (mode === '0') {
  if (statSync(BUNDLE, { throwIfNoEntry: false }) === undefined) {
    process.stderr.write(`filestore: the CLI bundle dist/filestore.js is not built (FILESTORE_CLI_SOURCES=0 runs only the bundle): run \`${REBUILD}\`\n`);
    process.exit(1);
  }
  await import(BUNDLE.href);
} else {
  const stale = whyStale();
  if (stale === null) await import(BUNDLE.href);
  else await runSources(stale);
}

/** Why the bundle cannot be taken as the sources' code (a sentence), or null when it can. */
function whyStale() {
  let record;
  try {
    record = JSON.parse(readFileSync(BUILT_FROM, 'utf8'));
  } catch {
    return 'the CLI bundle dist/filestore.js is not built';
  }
  if (statSync(BUNDLE, { throwIfNoEntry: false }) === undefined) return 'the CLI bundle dist/filestore.js is not built';
  for (const file of record.files) {
    const st = statSync(ROOT + file, { throwIfNoEntry: false });
    if (st === undefined) return `${file} is gone since the CLI bundle was built`;
    if (st.mtimeMs > record.builtAt) return `${file} changed since the CLI bundle was built`;
  }
  return null;
}

/** Loads cli/index.ts through tsx; `stale` (why the bundle is not run) is said first, if any. */
async function runSources(stale) {
  let tsx;
  try {
    tsx = await import('tsx/esm/api');
  } catch {
    const why = stale ?? 'FILESTORE_CLI_SOURCES=1 runs the sources';
    process.stderr.write(`filestore: ${why}, and tsx (a devDependency) is not installed to run the sources: install them (npm install) or build the bundle (\`${REBUILD}\`)\n`);
    process.exit(1);
  }
  if (stale !== null) process.stderr.write(`filestore: ${stale}: running the sources through tsx (slow start; \`${REBUILD}\` makes it current)\n`);
  tsx.register();
  await import('./index.ts');
}
