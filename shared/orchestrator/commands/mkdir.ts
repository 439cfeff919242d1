import { FilestoreError, NotFoundError } from '../../errors.ts';
import type { EntryStat } from '../../backends/types.ts';
import { findLiveByPath } from '../../catalogue/nodes.ts';
import { newNodeFromStat, type NewNode } from '../../catalogue/node-writes.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';
import { asJson, type CommandSpec } from '../context.ts';
import { catalogueCreated, checkParentChain, statCreated } from '../checks.ts';

export interface MkdirRequest {
  path: string;
  parents?: boolean | undefined;
}

interface Plan {
  existing: CatalogueNode | null;
  missingAncestors: string[];
}

/** Creates a directory (with parents: also its missing ancestors; an existing directory is then fine). */
export const mkdirCommand: CommandSpec<MkdirRequest, Plan, EntryStat | null, NewNode[]> = {
  command: 'mkdir',
  paths: (r) => [r.path],
  journalRequest: (r) => ({ path: r.path, parents: r.parents ?? false }),

  async prepare(step, r) {
    const chain = await checkParentChain(step, r.path, true);
    const existing = chain.self;
    if (existing && !(r.parents && existing.kind === 'directory')) {
      throw new FilestoreError('ALREADY_EXISTS', `"${r.path}" already exists as a ${existing.kind}`);
    }
    if (!r.parents && chain.missing.length > 0) {
      throw new NotFoundError(`parent directory "${chain.missing[0]}" does not exist; pass parents to create it`);
    }
    return { existing, missingAncestors: chain.missing };
  },

  async apply({ backend }, r, plan) {
    return plan.existing ? null : backend.mkdir(r.path, { parents: r.parents ?? false });
  },

  async observe({ backend }, _r, plan, stat) {
    return stat ? [...(await statCreated(backend, plan.missingAncestors)), newNodeFromStat(stat)] : [];
  },

  async commit({ q, mount, entryId }, r, plan, created) {
    const { events } = await catalogueCreated(q, mount.id, created, entryId);
    const node = plan.existing ?? (await findLiveByPath(q, mount.id, r.path));
    return { result: { journalEntryId: entryId, node: asJson(node) }, events };
  },
};
