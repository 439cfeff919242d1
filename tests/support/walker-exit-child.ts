// Walks a tree in a walker process and ends: the process must exit by itself (an idle walker
// process must not keep it alive), printing the number of entries.
import { walkOnWalker } from '../../shared/backends/local/walker.ts';

let n = 0;
for await (const rows of walkOnWalker({ rootPath: process.argv[2] as string, dir: '', recursive: true })) n += rows.length;
console.log(`walked ${n}`);
