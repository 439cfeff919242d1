import type { Backend } from '../backends/types.ts';
import type { Queryable } from '../db/pool.ts';
import { FilestoreError, NotFoundError } from '../errors.ts';
import { ancestorsOf } from '../paths.ts';
import { insertNodes, newNodeFromStat, type NewNode } from '../catalogue/node-writes.ts';
import type { CatalogueNode, Mount } from '../catalogue/types.ts';
import type { NewEvent } from '../catalogue/outbox.ts';
import { asJson, type Step } from './context.ts';

/** Refuses writes to a read-only or paused mount. */
export function assertWritable(mount: Mount): void {
  if (mount.state === 'paused') {
    throw new FilestoreError('MOUNT_PAUSED', `mount "${mount.key}" is paused; resume it with PATCH /v1/mounts/${mount.key} {"state":"active"}`);
  }
  if (mount.accessMode === 'ro') {
    throw new FilestoreError('MOUNT_READ_ONLY', `mount "${mount.key}" is read-only`);
  }
}

/** If-Match: expectedVersion 0 means "must not exist"; any other number must equal the live version. */
export function assertVersion(node: CatalogueNode | null, expected: number | undefined, path: string): void {
  if (expected === undefined) return;
  const actual = node?.version ?? 0;
  if (actual !== expected) {
    throw new FilestoreError('VERSION_MISMATCH', `"${path}" is at version ${actual}, not ${expected}; re-read it and retry`, {
      expectedVersion: expected,
      actualVersion: actual,
    });
  }
}

export interface ParentChain {
  /** Ancestors (root first) with no live catalogue row; created by the command. */
  missing: string[];
  /** The live node at the path itself, read in the same query. */
  self: CatalogueNode | null;
}

/**
 * Checks the catalogued ancestors of `path`: none may be a file or symlink, and unless
 * `createParents`, the parent must exist.
 */
export async function checkParentChain(step: Step, path: string, createParents: boolean): Promise<ParentChain> {
  const ancestors = ancestorsOf(path);
  const found = await step.live([...ancestors, path]);
  for (const a of ancestors) {
    const node = found.get(a) ?? null;
    if (node && node.kind !== 'directory') {
      throw new FilestoreError(node.kind === 'symlink' ? 'SYMLINK_IN_PATH' : 'NOT_A_DIRECTORY', `"${a}" is a ${node.kind}, not a directory`);
    }
  }
  const missing = ancestors.filter((a) => !found.get(a));
  if (!createParents && missing.length > 0) {
    throw new NotFoundError(`parent directory "${missing[0]}" does not exist; pass parents to create it`);
  }
  return { missing, self: found.get(path) ?? null };
}

/** Reads storage's stat of directories a command just created (outside any transaction). */
export async function statCreated(backend: Backend, paths: string[]): Promise<NewNode[]> {
  const out: NewNode[] = [];
  for (const p of paths) {
    const stat = await backend.stat(p);
    if (stat) out.push(newNodeFromStat(stat));
  }
  return out;
}

/**
 * Catalogues new nodes (parents first) and adds each to its ancestors' rollups. Paths a
 * concurrent command catalogued first are skipped. Returns the rows inserted and their
 * node.created events.
 */
export async function catalogueCreated(
  q: Queryable,
  mountId: string,
  nodes: NewNode[],
  journalEntryId: number,
): Promise<{ inserted: CatalogueNode[]; events: NewEvent[] }> {
  const inserted = await insertNodes(q, mountId, nodes, { journalEntryId }, 'ignore', true);
  const events = inserted.map((n) => ({
    type: 'filestore.node.created' as const,
    mountId,
    data: { node: asJson(n), journalEntryId },
  }));
  return { inserted, events };
}
