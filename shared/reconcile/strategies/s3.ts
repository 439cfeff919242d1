import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend, EntryStat, FileVersion } from '../../backends/types.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';
import { FilestoreError } from '../../errors.ts';
import { MountUnhealthyError } from '../errors.ts';
import type { ReconcileStrategy } from '../strategy.ts';
import { BackendStrategy } from './base.ts';

/**
 * S3: the walk is ListObjectsV2 pages re-ordered into path order (directories are markers or
 * implicit prefixes); a change is a different ETag or size. Before an object is called
 * MISSING it is looked at again (HEAD) after a grace period, because S3-compatible stores
 * may list an object late after it was written.
 */
export class S3Strategy extends BackendStrategy implements ReconcileStrategy {
  readonly kind = 's3' as const;

  constructor(
    backend: () => Backend,
    private readonly graceMs: number,
  ) {
    // A key below a file's key is not part of the tree.
    super(backend, new Set(['NOT_A_DIRECTORY', 'NOT_FOUND']));
  }

  async checkRoot(): Promise<null> {
    try {
      // One page of the root listing proves the bucket exists and the credentials can list it.
      for await (const _ of this.backend().list('', { recursive: false })) break;
      return null; // a bucket has no identity to compare: the mass-missing rule covers an emptied one
    } catch (err) {
      const e = err as FilestoreError;
      throw new MountUnhealthyError(e instanceof FilestoreError ? `${e.code}: ${e.message}` : String(err));
    }
  }


  differs(node: CatalogueNode, seen: EntryStat): boolean {
    if (node.kind !== 'file') return false; // prefixes and markers carry nothing to compare
    if (node.sizeBytes !== seen.sizeBytes) return true;
    return node.etag !== null && seen.etag !== null && node.etag !== seen.etag;
  }

  /** A listing and a GetObject of the same object version agree on its size and ETag. */
  sameVersion(seen: EntryStat, hashed: FileVersion): boolean {
    return seen.sizeBytes === hashed.sizeBytes && seen.etag === hashed.etag;
  }

  /** S3-compatible stores may list an object late after it was written: wait before looking again. */
  protected override async beforeSecondLook(paths: string[]): Promise<void> {
    if (paths.length > 0 && this.graceMs > 0) await sleep(this.graceMs);
  }
}
