import type { Backend, EntryStat } from '../../backends/types.ts';
import type { Queryable } from '../../db/pool.ts';
import { FilestoreError, NotFoundError } from '../../errors.ts';
import { isSameOrDescendant, parentOf, rebase } from '../../paths.ts';
import { findLiveByPath, listLive } from '../../catalogue/nodes.ts';
import { insertNodes, moveSubtree, newNodeFromStat, setStorageStamps, tombstoneSubtree, type NewNode } from '../../catalogue/node-writes.ts';
import { addToAncestors, childPart, negate, recomputeRollups, subtreeTotals } from '../../catalogue/rollups.ts';
import type { NewEvent } from '../../catalogue/outbox.ts';
import type { CatalogueNode, Mount } from '../../catalogue/types.ts';
import { getMount } from '../../catalogue/mounts.ts';
import { asJson, stagingIdOf, type CommandSpec, type Step } from '../context.ts';
import { assertVersion, catalogueCreated, checkParentChain, statCreated } from '../checks.ts';

export interface TransferRequest {
  path: string;
  targetPath: string;
  /** Must name the same mount (id or key) when given; moves between mounts are not supported yet. */
  targetMountId?: string | undefined;
  /** Replace an existing target (a directory target is replaced whole). */
  overwrite?: boolean | undefined;
  /** If-Match on the source. */
  expectedVersion?: number | undefined;
}

interface Plan {
  source: CatalogueNode;
  target: CatalogueNode | null;
  missingAncestors: string[];
}

async function prepareTransfer(step: Step, r: TransferRequest, verb: string): Promise<Plan> {
  const { q, mount } = step;
  if (r.targetMountId !== undefined && (await getMount(q, r.targetMountId)).id !== mount.id) {
    throw new FilestoreError('NOT_IMPLEMENTED', `moving or copying between mounts is not supported yet; copy the bytes with get and put`);
  }
  if (r.path === '') throw new FilestoreError('MOVE_INTO_SELF', `the mount root cannot be ${verb}`);
  if (isSameOrDescendant(r.targetPath, r.path)) {
    throw new FilestoreError('MOVE_INTO_SELF', `"${r.path}" cannot be ${verb} to itself or into its own subtree`);
  }
  if (isSameOrDescendant(r.path, r.targetPath)) {
    throw new FilestoreError('MOVE_INTO_SELF', `"${r.targetPath}" contains "${r.path}"; it cannot be replaced by it`);
  }
  const known = await step.live([r.path, r.targetPath]);
  const source = known.get(r.path) ?? null;
  if (!source) throw new NotFoundError(`"${r.path}" is not in the catalogue`);
  assertVersion(source, r.expectedVersion, r.path);
  const target = known.get(r.targetPath) ?? null;
  if (target && !r.overwrite) {
    throw new FilestoreError('ALREADY_EXISTS', `"${r.targetPath}" already exists; pass overwrite to replace it`);
  }
  const chain = await checkParentChain(step, r.targetPath, true);
  return { source, target, missingAncestors: chain.missing };
}

/** Storage's view of a subtree after a transfer: the entry itself, then its descendants in byte order. */
export async function statSubtree(backend: Backend, path: string): Promise<EntryStat[]> {
  const top = await backend.stat(path);
  if (!top) throw new FilestoreError('STORAGE_ERROR', `"${path}" is missing from storage right after the operation`);
  const out = [top];
  if (top.kind === 'directory') for await (const e of backend.list(path, { recursive: true })) out.push(e);
  return out;
}

/**
 * What the target held before the transfer, journaled so recovery can tell a target this
 * command created (safe to redo over) from one it must not touch.
 */
async function targetPreState({ backend }: Step, r: TransferRequest): Promise<Record<string, unknown>> {
  const stat = await backend.stat(r.targetPath);
  return { targetPreExisted: stat !== null, ...(stat ? { targetPreStat: { kind: stat.kind, sizeBytes: stat.sizeBytes, mtime: stat.mtime, etag: stat.etag } } : {}) };
}

/** Removes a replaced target from the catalogue and its ancestors' rollups. */
async function dropReplacedTarget(q: Queryable, mount: Mount, target: CatalogueNode | null, entryId: number): Promise<NewEvent[]> {
  if (!target) return [];
  const totals = await subtreeTotals(q, target);
  const { count, top } = await tombstoneSubtree(q, mount.id, target.path, { journalEntryId: entryId });
  await addToAncestors(q, mount.id, target.path, negate(totals), -childPart(target));
  return [{ type: 'filestore.node.deleted', mountId: mount.id, data: { node: asJson(top ?? target), deletedCount: count, replaced: true, journalEntryId: entryId } }];
}

interface MoveOutcome {
  ancestors: NewNode[];
  /** S3 has no rename: moved objects get new ETags and times, recorded here by target path. */
  restat: EntryStat[];
}

/** Moves a file or tree inside one mount (local: one atomic rename). */
export const moveCommand: CommandSpec<TransferRequest, Plan, void, MoveOutcome> = {
  command: 'move',
  paths: (r) => [r.path, r.targetPath],
  journalRequest: (r) => ({
    path: r.path,
    targetPath: r.targetPath,
    overwrite: r.overwrite ?? false,
    ...(r.targetMountId !== undefined ? { targetMountId: r.targetMountId } : {}),
    ...(r.expectedVersion !== undefined ? { expectedVersion: r.expectedVersion } : {}),
  }),
  prepare: (step, r) => prepareTransfer(step, r, 'moved'),
  preState: targetPreState,

  async apply({ backend, entryId }, r) {
    await backend.move(r.path, r.targetPath, { overwrite: r.overwrite ?? false, stagingId: stagingIdOf(entryId) });
  },

  async observe({ backend }, r, plan) {
    return {
      ancestors: await statCreated(backend, plan.missingAncestors),
      restat: backend.kind === 's3' ? await statSubtree(backend, r.targetPath) : [],
    };
  },

  async commit({ q, mount, entryId }, r, { source, target }, outcome) {
    const events = await dropReplacedTarget(q, mount, target, entryId);
    events.push(...(await catalogueCreated(q, mount.id, outcome.ancestors, entryId)).events);
    const totals = await subtreeTotals(q, source);
    await addToAncestors(q, mount.id, r.path, negate(totals), -childPart(source));
    // Stamped on the source rows before they move, so the move's snapshots carry them.
    await setStorageStamps(q, mount.id, outcome.restat.map((s) => ({ ...s, path: rebase(s.path, r.targetPath, r.path) })));
    const parent = await findLiveByPath(q, mount.id, parentOf(r.targetPath) as string);
    const { node, count } = await moveSubtree(q, mount.id, r.path, r.targetPath, (parent as CatalogueNode).id, { journalEntryId: entryId });
    await addToAncestors(q, mount.id, r.targetPath, totals, childPart(source));
    events.push({ type: 'filestore.node.moved', mountId: mount.id, data: { node: asJson(node), from: r.path, to: r.targetPath, movedCount: count, journalEntryId: entryId } });
    return { result: { journalEntryId: entryId, node: asJson(node), movedCount: count }, events };
  },
};

interface CopyPlan extends Plan {
  /** Catalogue facts storage cannot tell (content hash, user metadata), by source path. */
  sourceFacts: Map<string, { sha256: string | null; metadata: Record<string, unknown> }>;
}

/** Copies a file or tree inside one mount; the copy is catalogued from what storage then holds. */
export const copyCommand: CommandSpec<TransferRequest, CopyPlan, void, { ancestors: NewNode[]; copied: EntryStat[] }> = {
  command: 'copy',
  paths: (r) => [r.path, r.targetPath],
  journalRequest: (r) => moveCommand.journalRequest(r),

  async prepare(step, r) {
    const { q, mount } = step;
    const plan = await prepareTransfer(step, r, 'copied');
    const sourceFacts = new Map([[plan.source.path, { sha256: plan.source.sha256, metadata: plan.source.metadata }]]);
    if (plan.source.kind === 'directory') {
      for (let after: string | undefined; ; ) {
        const page = await listLive(q, { mountId: mount.id, prefix: `${r.path}/`, afterPath: after, limit: 5000 });
        for (const n of page) sourceFacts.set(n.path, { sha256: n.sha256, metadata: n.metadata });
        if (page.length < 5000) break;
        after = page[page.length - 1]?.path;
      }
    }
    return { ...plan, sourceFacts };
  },

  preState: targetPreState,

  async apply({ backend, entryId }, r) {
    await backend.copy(r.path, r.targetPath, { overwrite: r.overwrite ?? false, stagingId: stagingIdOf(entryId) });
  },

  async observe({ backend }, r, plan) {
    return { ancestors: await statCreated(backend, plan.missingAncestors), copied: await statSubtree(backend, r.targetPath) };
  },

  async commit({ q, mount, entryId }, r, plan, outcome) {
    const events = await dropReplacedTarget(q, mount, plan.target, entryId);
    events.push(...(await catalogueCreated(q, mount.id, outcome.ancestors, entryId)).events);
    const rows = outcome.copied.map((stat) => {
      const facts = plan.sourceFacts.get(rebase(stat.path, r.targetPath, r.path));
      const node = newNodeFromStat(stat, facts?.sha256 ?? null);
      return { ...node, metadata: { ...facts?.metadata, ...node.metadata } };
    });
    const inserted = [];
    for (let i = 0; i < rows.length; i += 1000) {
      inserted.push(...(await insertNodes(q, mount.id, rows.slice(i, i + 1000), { journalEntryId: entryId })));
    }
    const top = inserted.find((n) => n.path === r.targetPath) as CatalogueNode;
    if (top.kind === 'directory') await recomputeRollups(q, mount.id, r.targetPath);
    await addToAncestors(q, mount.id, r.targetPath, await subtreeTotals(q, top), 1);
    events.push({ type: 'filestore.node.copied', mountId: mount.id, data: { node: asJson(top), from: r.path, to: r.targetPath, copiedCount: inserted.length, journalEntryId: entryId } });
    return { result: { journalEntryId: entryId, node: asJson(top), copiedCount: inserted.length }, events };
  },
};
