import type { Backend } from '../backends/types.ts';
import type { PoolClient } from '../db/pool.ts';
import { patchRequest } from '../catalogue/journal.ts';
import { findLiveByPaths } from '../catalogue/nodes.ts';
import type { CatalogueNode, Mount } from '../catalogue/types.ts';
import type { Step } from './context.ts';

/**
 * A command's working context. `prefetched` holds the nodes read when the command began:
 * every path it covers (present or not) is answered from it; other paths are queried.
 */
export function makeStep(
  q: PoolClient,
  mount: Mount,
  backend: Backend,
  entryId: number,
  prefetched?: { covered: Set<string>; nodes: CatalogueNode[] },
): Step {
  const known = new Map<string, CatalogueNode | null>();
  if (prefetched) {
    for (const p of prefetched.covered) known.set(p, null);
    for (const n of prefetched.nodes) known.set(n.path, n);
  }
  return {
    q,
    mount,
    backend,
    entryId,
    journal: (patch) => patchRequest(q, entryId, patch),
    async live(paths) {
      const missing = paths.filter((p) => !known.has(p));
      const found = missing.length > 0 ? await findLiveByPaths(q, mount.id, missing) : new Map<string, CatalogueNode>();
      return new Map(paths.map((p) => [p, known.has(p) ? (known.get(p) as CatalogueNode | null) : (found.get(p) ?? null)]));
    },
  };
}
