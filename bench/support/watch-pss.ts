/**
 * The PSS one watcher backend adds to this process while it watches a tree (issue 17):
 *   node --expose-gc --import tsx bench/support/watch-pss.ts <dirs|parcel|chokidar> <root> [dirs filesPerDir]
 * Creates the tree (empty files, `createLeanTree`) when <root> does not exist. Prints
 * `backend files dirs watches pssBeforeKiB pssAfterKiB deltaKiB startMs`. Run one backend per
 * process: PSS is the whole process's (/proc/self/smaps_rollup), measured after a GC before
 * start and once the tree is watched.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createWatchBackend } from '../../agent/watch/backends/index.ts';
import type { WatchBackendKind } from '../../agent/watch/types.ts';
import { createLeanTree } from './audit-trees.ts';

async function pssKiB(): Promise<number> {
  (globalThis as { gc?: () => void }).gc?.();
  await new Promise((r) => setTimeout(r, 300));
  const m = /^Pss:\s+(\d+) kB/m.exec(await readFile('/proc/self/smaps_rollup', 'utf8'));
  return Number(m?.[1] ?? Number.NaN);
}

const [kind, root, dirsArg, perDirArg] = process.argv.slice(2) as [WatchBackendKind, string, string?, string?];
const shape = { dirs: Number(dirsArg ?? 200), filesPerDir: Number(perDirArg ?? 1000) };
if (!existsSync(root)) await createLeanTree(root, shape);
let events = 0;
const backend = createWatchBackend(kind, root, { onEvents: (e) => (events += e.length), onProblem: (p) => console.error('problem', p) });
const before = await pssKiB();
const t0 = performance.now();
await backend.start();
const startMs = Math.round(performance.now() - t0);
await new Promise((r) => setTimeout(r, 1_000));
const after = await pssKiB();
console.log([kind, shape.dirs * shape.filesPerDir, shape.dirs, await backend.watchCount(), before, after, after - before, startMs, events].join(' '));
await backend.close();
process.exit(0);
