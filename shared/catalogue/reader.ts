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

// Mounts found are remembered in this process this long; a miss is never remembered.
const MOUNT_TTL_MS = 5_000;

/**
 * Cached catalogue reads: nodes through the shared read-through cache (invalidated by every
 * command), mount lookups in process memory for a few seconds (only reads use them; commands
 * always read the mount row, so a paused or read-only mount takes effect at once for writes).
 */
export class CatalogueReader {
  private readonly mounts = new Map<string, { mount: Mount; until: number }>();

  constructor(
    private readonly q: Queryable,
    private readonly cache: ReadThroughCache,
  ) {}

  /** Drops a mount from this process's lookup cache (it was removed; other processes' caches expire). */
  forget(mount: Pick<Mount, 'id' | 'key'>): void {
    this.mounts.delete(mount.id);
    this.mounts.delete(mount.key);
  }

  async mount(idOrKey: string): Promise<Mount> {
    const hit = this.mounts.get(idOrKey);
    if (hit && hit.until > Date.now()) return hit.mount;
    const mount = await findMount(this.q, idOrKey);
    if (!mount) throw new FilestoreError('MOUNT_NOT_FOUND', `no mount "${idOrKey}"; list mounts with \`filestore mounts list\``);
    if (this.mounts.size > 1000) this.mounts.clear();
    this.mounts.set(idOrKey, { mount: JSON.parse(JSON.stringify(mount)) as Mount, until: Date.now() + MOUNT_TTL_MS });
    return mount;
  }

  /** One live node by path, with its rollup if it is a directory; NOT_FOUND when absent. */
  async nodeByPath(mountRef: string, rawPath: string): Promise<NodeView> {
    return JSON.parse(await this.nodeByPathJson(mountRef, rawPath)) as NodeView;
  }

  /** nodeByPath as JSON text, straight from the cache. */
  async nodeByPathJson(mountRef: string, rawPath: string): Promise<string> {
    const path = normalizePath(rawPath);
    const mount = await this.mount(mountRef);
    const json = await this.cache.readJson(mount.id, `node:${path}`, async () => {
      const node = await findLiveByPath(this.q, mount.id, path);
      if (!node) return null;
      const rollup = node.kind === 'directory' ? await readRollup(this.q, node.id) : null;
      return { ...node, ...(node.kind === 'directory' ? { rollup } : {}) };
    });
    if (json === 'null') throw new FilestoreError('NOT_FOUND', `no node at "${path}" in mount "${mount.key}"`);
    return json;
  }
}
