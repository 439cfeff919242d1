import type { EntryStat } from '../backends/types.ts';
import type { CatalogueNode } from '../catalogue/types.ts';
import { comparePaths } from '../paths.ts';

/** One path of the merge: what storage holds (seen) and what the catalogue recorded (node). */
export interface Pair {
  path: string;
  seen: EntryStat | null;
  node: CatalogueNode | null;
}

/**
 * Merges two listings sorted in byte order of path into pairs, streaming: memory holds one
 * entry of each side. Throws if either side is out of order (a bug that would otherwise turn
 * into false MISSING/discovered pairs).
 */
export async function* mergeByPath(storage: AsyncIterable<EntryStat>, catalogue: AsyncIterable<CatalogueNode>): AsyncGenerator<Pair> {
  const s = storage[Symbol.asyncIterator]();
  const c = catalogue[Symbol.asyncIterator]();
  let seen = await next(s);
  let node = await next(c);
  let last: string | null = null;
  while (seen || node) {
    const order = seen && node ? comparePaths(seen.path, node.path) : seen ? -1 : 1;
    const path = order <= 0 ? (seen as EntryStat).path : (node as CatalogueNode).path;
    if (last !== null && comparePaths(last, path) >= 0) throw new Error(`reconcile merge: "${path}" after "${last}" is out of order`);
    last = path;
    if (order === 0) {
      yield { path, seen, node };
      [seen, node] = await Promise.all([next(s), next(c)]);
    } else if (order < 0) {
      yield { path, seen, node: null };
      seen = await next(s);
    } else {
      yield { path, seen: null, node };
      node = await next(c);
    }
  }
}

async function next<T>(it: AsyncIterator<T>): Promise<T | null> {
  const r = await it.next();
  return r.done ? null : r.value;
}
