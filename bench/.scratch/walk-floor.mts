// scratch: how long the local backend's listing alone takes on the 100k tree, vs a bare readdir+lstat
import { lstat, readdir } from 'node:fs/promises';
import { lstat as lstatCb } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { LocalExecutor } from '../../shared/backends/local/local-executor.ts';
import { createSmallFileTree } from '../support/audit-trees.ts';
const root = '/tmp/benchtools/walk-tree';
await import('node:fs/promises').then((f) => f.rm(root, { recursive: true, force: true }));
await createSmallFileTree(root, { dirs: 100, filesPerDir: 1000 });
const ex = new LocalExecutor({ rootPath: root });
for (let r = 0; r < 3; r++) {
  let n = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for await (const _ of ex.list('', { recursive: true })) n++;
  const cpu = process.cpuUsage(c0);
  console.log(`LocalExecutor.list: ${n} entries in ${Math.round(performance.now() - t0)} ms, cpu ${Math.round((cpu.user + cpu.system) / 1000)} ms`);
}
for (let r = 0; r < 2; r++) {
  const t0 = performance.now();
  let n = 0;
  for (const d of await readdir(root)) {
    const names = await readdir(`${root}/${d}`);
    let i = 0;
    await Promise.all(Array.from({ length: 16 }, async () => { while (i < names.length) { await lstat(`${root}/${d}/${names[i++]}`); n++; } }));
  }
  console.log(`bare readdir + fs.promises.lstat x16: ${n} in ${Math.round(performance.now() - t0)} ms`);
}
for (let r = 0; r < 2; r++) {
  const t0 = performance.now();
  let n = 0;
  for (const d of await readdir(root)) {
    const names = await readdir(`${root}/${d}`);
    await new Promise<void>((resolve) => { let left = names.length; for (const nm of names) lstatCb(`${root}/${d}/${nm}`, () => { n++; if (--left === 0) resolve(); }); });
  }
  console.log(`bare readdir + callback lstat, all at once per dir: ${n} in ${Math.round(performance.now() - t0)} ms`);
}
await import('node:fs/promises').then((f) => f.rm(root, { recursive: true, force: true }));
