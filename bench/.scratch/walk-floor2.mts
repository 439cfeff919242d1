import { lstat, readdir } from 'node:fs/promises';
import { lstat as lstatCb } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createSmallFileTree } from '../support/audit-trees.ts';
const root = '/tmp/benchtools/walk-tree';
await import('node:fs/promises').then((f) => f.rm(root, { recursive: true, force: true }));
await createSmallFileTree(root, { dirs: 100, filesPerDir: 1000 });
const dirs = await readdir(root);
async function promiseN(conc: number) {
  const t0 = performance.now(); let n = 0;
  for (const d of dirs) {
    const names = await readdir(`${root}/${d}`);
    let i = 0;
    await Promise.all(Array.from({ length: Math.min(conc, names.length) }, async () => { while (i < names.length) { await lstat(`${root}/${d}/${names[i++]}`); n++; } }));
  }
  return `${Math.round(performance.now() - t0)} ms`;
}
function cbN(conc: number) {
  return new Promise<string>(async (resolveAll) => {
    const t0 = performance.now();
    for (const d of dirs) {
      const names = await readdir(`${root}/${d}`);
      await new Promise<void>((resolve) => {
        let next = 0, done = 0;
        const go = () => { const nm = names[next++]; if (nm === undefined) return; lstatCb(`${root}/${d}/${nm}`, () => { if (++done === names.length) resolve(); else go(); }); };
        for (let k = 0; k < conc; k++) go();
      });
    }
    resolveAll(`${Math.round(performance.now() - t0)} ms`);
  });
}
for (const c of [4, 16, 64, 256, 1000]) console.log(`promises x${c}: ${await promiseN(c)}, ${await promiseN(c)}; callbacks x${c}: ${await cbN(c)}, ${await cbN(c)}`);
await import('node:fs/promises').then((f) => f.rm(root, { recursive: true, force: true }));
