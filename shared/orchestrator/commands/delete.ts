import { FilestoreError, NotFoundError } from '../../errors.ts';
import { listChildren } from '../../catalogue/nodes.ts';
import { tombstoneSubtree } from '../../catalogue/node-writes.ts';
import { addToAncestors, childPart, negate, subtreeTotals } from '../../catalogue/rollups.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';
import { asJson, stagingIdOf, type CommandSpec } from '../context.ts';
import { assertVersion } from '../checks.ts';

export interface DeleteRequest {
  path: string;
  recursive?: boolean | undefined;
  expectedVersion?: number | undefined;
}

/** Deletes a file, symlink or directory (non-empty only with recursive), and its catalogue subtree. */
export const deleteCommand: CommandSpec<DeleteRequest, CatalogueNode, { alreadyGone: boolean }, { alreadyGone: boolean }> = {
  command: 'delete',
  paths: (r) => [r.path],
  journalRequest: (r) => ({
    path: r.path,
    recursive: r.recursive ?? false,
    ...(r.expectedVersion !== undefined ? { expectedVersion: r.expectedVersion } : {}),
  }),

  async prepare({ q, live }, r) {
    if (r.path === '') throw new FilestoreError('INVALID_PATH', 'the mount root cannot be deleted');
    const node = (await live([r.path])).get(r.path) ?? null;
    if (!node) throw new NotFoundError(`"${r.path}" is not in the catalogue`);
    assertVersion(node, r.expectedVersion, r.path);
    if (node.kind === 'directory' && !r.recursive && (await listChildren(q, node.id, 1)).length > 0) {
      throw new FilestoreError('DIRECTORY_NOT_EMPTY', `"${r.path}" is not empty; pass recursive to delete it with its contents`);
    }
    return node;
  },

  async apply({ backend, entryId }, r) {
    try {
      await backend.delete(r.path, { recursive: r.recursive ?? false, stagingId: stagingIdOf(entryId) });
      return { alreadyGone: false };
    } catch (err) {
      // Already gone from storage: the caller's intent holds, so the catalogue catches up.
      if (err instanceof FilestoreError && err.code === 'NOT_FOUND') return { alreadyGone: true };
      throw err;
    }
  },

  async observe(_step, _r, _node, applied) {
    return applied;
  },

  async commit({ q, mount, entryId }, r, node, { alreadyGone }) {
    const totals = await subtreeTotals(q, node);
    const { count, top } = await tombstoneSubtree(q, mount.id, r.path, { journalEntryId: entryId });
    // A MISSING node was not counted (rollups.ts): deleting it changes no total.
    await addToAncestors(q, mount.id, r.path, negate(totals), -childPart(node));
    const tombstone = asJson(top ?? node);
    return {
      result: { journalEntryId: entryId, node: tombstone, deletedCount: count, alreadyGone },
      events: [{ type: 'filestore.node.deleted', mountId: mount.id, data: { node: tombstone, deletedCount: count, journalEntryId: entryId } }],
    };
  },
};
