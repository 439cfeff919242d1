import { setTimeout as sleep } from 'node:timers/promises';
import { linePath, type StorageRow } from '../../backends/entry-lines.ts';
import { normalizeMountPrefix } from '../../backends/s3/keys.ts';
import type { SkippedNames } from '../../backends/skipped.ts';
import type { Backend, EntryStat, FileVersion } from '../../backends/types.ts';
import { listMounts } from '../../catalogue/mounts.ts';
import type { CatalogueNode, Mount } from '../../catalogue/types.ts';
import type { Queryable } from '../../db/pool.ts';
import { STAGING_DIR } from '../../paths.ts';
import { FilestoreError } from '../../errors.ts';
import { MountUnhealthyError } from '../errors.ts';
import type { ReconcileStrategy } from './types.ts';
import { BackendStrategy } from './base.ts';

/**
 * S3: the walk is ListObjectsV2 pages re-ordered into path order (directories are markers or
 * implicit prefixes); a change is a different ETag or size. Before an object is called
 * MISSING it is looked at again (HEAD) after a grace period, because S3-compatible stores
 * may list an object late after it was written.
 */
export class S3Strategy extends BackendStrategy implements ReconcileStrategy {
  readonly kind = 's3' as const;

  private hiddenPaths: Promise<readonly string[]> | undefined;

  constructor(
    backend: () => Backend,
    private readonly graceMs: number,
    /**
     * The staging areas of mounts nested in this one (see nestedStagingPaths): left out of its
     * listings and stats like its own. Without it (the drift observer, whose keys the caller
     * already filtered), nothing more is hidden.
     */
    private readonly nestedStaging?: () => Promise<readonly string[]>,
  ) {
    // A key below a file's key is not part of the tree.
    super(backend, new Set(['NOT_A_DIRECTORY', 'NOT_FOUND']));
  }

  /** Once per strategy (one run): mounts are added rarely, and the next run sees a new one. */
  private hidden(): Promise<readonly string[]> {
    this.hiddenPaths ??= this.nestedStaging?.() ?? Promise.resolve([]);
    return this.hiddenPaths;
  }

  override async stat(path: string): Promise<EntryStat | null> {
    if (isHidden(path, await this.hidden())) return null;
    return super.stat(path);
  }

  override async *list(dir: string, recursive: boolean, startAfter?: string): AsyncIterable<EntryStat> {
    const hidden = await this.hidden();
    for await (const e of super.list(dir, recursive, startAfter)) if (!isHidden(e.path, hidden)) yield e;
  }

  override async *listRows(dir: string, recursive: boolean, startAfter?: string, skipped?: SkippedNames): AsyncIterable<StorageRow[]> {
    const hidden = await this.hidden();
    for await (const rows of super.listRows(dir, recursive, startAfter, skipped)) {
      const kept = hidden.length === 0 ? rows : rows.filter((r) => !isHidden(linePath(r), hidden));
      if (kept.length > 0) yield kept;
    }
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

/**
 * The staging areas, as paths of `mount`, of the other S3 mounts of its bucket nested below it
 * (prefix "tenant/" inside a mount of the whole bucket: "tenant/.filestore-staging"), paused
 * ones too. Their staged bytes are no files of the outer mount; the nested mount's other keys
 * are (a file of both mounts, as in storage).
 */
export async function nestedStagingPaths(q: Queryable, mount: Mount): Promise<string[]> {
  const own = normalizeMountPrefix(mount.prefix);
  const paths = new Set<string>();
  for (const m of await listMounts(q)) {
    if (m.id === mount.id || m.kind !== 's3' || m.bucket !== mount.bucket || (m.endpoint ?? null) !== (mount.endpoint ?? null)) continue;
    const prefix = normalizeMountPrefix(m.prefix);
    if (prefix !== own && prefix.startsWith(own)) paths.add(`${prefix.slice(own.length)}${STAGING_DIR}`);
  }
  return [...paths];
}

function isHidden(path: string, hidden: readonly string[]): boolean {
  return hidden.some((h) => path === h || path.startsWith(`${h}/`));
}
