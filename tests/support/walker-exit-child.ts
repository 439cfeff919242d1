// Walks a tree on the walker thread and ends: the process must exit by itself (an idle walker
// thread must not keep it alive), printing the number of entries.
import { walkOnThread } from '../../shared/backends/local/walker.ts';

let n = 0;
for await (const rows of walkOnThread({ rootPath: process.argv[2] as string, dir: '', recursive: true })) n += rows.length;
console.log(`walked ${n}`);
