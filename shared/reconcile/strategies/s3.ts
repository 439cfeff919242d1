import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend, EntryStat } from '../../backends/types.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';
import { FilestoreError } from '../../errors.ts';
import { MountUnhealthyError } from '../errors.ts';
import { forEachLimited, type ReconcileStrategy } from '../strategy.ts';

/**
 * S3: the walk is ListObjectsV2 pages re-ordered into path order (directories are markers or
 * implicit prefixes); a change is a different ETag or size. Before an object is called
 * MISSING it is looked at again (HEAD) after a grace period, because S3-compatible stores
 * may list an object late after it was written.
 */
export class S3Strategy implements ReconcileStrategy {
  readonly kind = 's3' as const;

  constructor(
    private readonly backend: () => Backend,
    private readonly graceMs: number,
  ) {}

  async checkRoot(): Promise<void> {
    try {
      // One page of the root listing proves the bucket exists and the credentials can list it.
      for await (const _ of this.backend().list('', { recursive: false })) break;
    } catch (err) {
      const e = err as FilestoreError;
      throw new MountUnhealthyError(e instanceof FilestoreError ? `${e.code}: ${e.message}` : String(err));
    }
  }

  /** Absent also when an ancestor is a file: such a key is not part of the tree. */
  async stat(path: string): Promise<EntryStat | null> {
    try {
      return await this.backend().stat(path);
    } catch (err) {
      if (err instanceof FilestoreError && (err.code === 'NOT_A_DIRECTORY' || err.code === 'NOT_FOUND')) return null;
      throw err;
    }
  }

  list(dir: string, recursive: boolean, startAfter?: string): AsyncIterable<EntryStat> {
    return this.backend().list(dir, { recursive, startAfter });
  }

  differs(node: CatalogueNode, seen: EntryStat): boolean {
    if (node.kind !== 'file') return false; // prefixes and markers carry nothing to compare
    if (node.sizeBytes !== seen.sizeBytes) return true;
    return node.etag !== null && seen.etag !== null && node.etag !== seen.etag;
  }

  async confirmGone(paths: string[]): Promise<Set<string>> {
    if (paths.length > 0 && this.graceMs > 0) await sleep(this.graceMs);
    const gone = new Set<string>();
    await forEachLimited(paths, 16, async (p) => {
      if ((await this.stat(p)) === null) gone.add(p);
    });
    return gone;
  }

  hash(path: string): Promise<string> {
    return this.backend().hash(path);
  }
}
