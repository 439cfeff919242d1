import type { Queryable } from '../db/pool.ts';
import type { ReadThroughCache } from '../cache/read-through.ts';
import { FilestoreError } from '../errors.ts';
import { normalizePath } from '../paths.ts';
import { findMount } from './mounts.ts';
import { findLiveByPath } from './nodes.ts';
import { readRollup } from './rollups.ts';
import type { Mount } from './types.ts';

/** A node as the API returns it: camelCase JSON, with the rollup for directories. */
export type NodeView = Record<string, unknown> & { rollup?: Record<string, unknown> | null };

/**
 * Cached catalogue reads. Mount lookups are cached too (they change rarely, and every
 * mount change bumps the same generation as its nodes).
 */
export class CatalogueReader {
  constructor(
    private readonly q: Queryable,
    private readonly cache: ReadThroughCache,
  ) {}

  async mount(idOrKey: string): Promise<Mount> {
    const mount = await this.cache.read('mounts', idOrKey, () => findMount(this.q, idOrKey));
    if (!mount) throw new FilestoreError('MOUNT_NOT_FOUND', `no mount "${idOrKey}"; list mounts with \`filestore mounts list\``);
    return mount;
  }

  /** One live node by path, with its rollup if it is a directory; NOT_FOUND when absent. */
  async nodeByPath(mountRef: string, rawPath: string): Promise<NodeView> {
    const path = normalizePath(rawPath);
    const mount = await this.mount(mountRef);
    const view = await this.cache.read(mount.id, `node:${path}`, async () => {
      const node = await findLiveByPath(this.q, mount.id, path);
      if (!node) return null;
      const rollup = node.kind === 'directory' ? await readRollup(this.q, node.id) : null;
      return JSON.parse(JSON.stringify({ ...node, ...(node.kind === 'directory' ? { rollup } : {}) })) as NodeView;
    });
    if (!view) throw new FilestoreError('NOT_FOUND', `no node at "${path}" in mount "${mount.key}"`);
    return view;
  }
}
