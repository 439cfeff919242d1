import type { Backend, EntryStat, FileVersion } from '../../backends/types.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';
import { MountUnhealthyError } from '../errors.ts';
import type { ReconcileStrategy } from './types.ts';
import { BackendStrategy } from './base.ts';
import type { StorageRow } from '../../backends/entry-lines.ts';
import type { SkippedNames } from '../../backends/skipped.ts';
import { walkTree } from '../../backends/local/walker.ts';
import { DiskStat } from '../../backends/local/disk-stat.ts';
import { lookAtRoot, pinnedRootOr } from '../../backends/local/root-check.ts';

const mtimeMs = (d: Date | string | null) => (d === null ? null : d instanceof Date ? d.getTime() : new Date(d).getTime());

/**
 * Local disks: the walk is the LocalExecutor's listing (lstat in windows of entries, never
 * following symlinks, byte order); a change is any difference in size, mtime, mode, owner,
 * or a symlink's target.
 */
export class LocalStrategy extends BackendStrategy implements ReconcileStrategy {
  readonly kind = 'local' as const;
  private readonly disk: DiskStat;

  constructor(
    private readonly rootPath: string,
    backend: () => Backend,
  ) {
    // A path below a symlink or a file is not part of the tree.
    super(backend, new Set(['SYMLINK_IN_PATH', 'NOT_A_DIRECTORY', 'NOT_FOUND']));
    this.disk = new DiskStat(rootPath, (path) => this.stat(path));
  }

  /**
   * The one look at the root (root-check.ts, the watcher's too): gone, a symbolic link, not a
   * directory, unreadable, or its staging area a symlink or not a directory → unhealthy.
   * Returns the root's identity (device:inode), which the engine compares with the catalogue's.
   */
  async checkRoot(): Promise<string> {
    const look = await lookAtRoot(this.rootPath);
    if (!look.ok) throw new MountUnhealthyError(look.reason);
    if (look.unhealthy !== null) throw new MountUnhealthyError(look.unhealthy);
    return look.id;
  }

  /**
   * A recursive listing (audits, subtrees) runs in the walker processes, split by subtree,
   * beside the comparison; direct children are few and listed here.
   */
  override listRows(dir: string, recursive: boolean, startAfter?: string, skipped?: SkippedNames): AsyncIterable<StorageRow[]> {
    if (!recursive) return super.listRows(dir, recursive, startAfter, skipped);
    // The walker processes are given the directory this process pinned (root-check.ts), so a
    // re-pointed symlink in the registered path cannot send them elsewhere.
    return walkTree({ rootPath: pinnedRootOr(this.rootPath), dir, startAfter }, skipped);
  }

  /**
   * The second look before MISSING, directory by directory, as the watcher looks after a
   * burst (DiskStat: each directory opened once and checked to be exactly where its path
   * says, its candidates lstat'ed through that handle, synchronously). An entry is gone when
   * it is absent or no longer something Filestore catalogues (below a symlink or a file, a
   * FIFO, a socket, a device). One that could not be read (permissions, I/O) is not: no
   * MISSING on evidence that was never seen.
   */
  override async confirmGone(paths: string[]): Promise<Set<string>> {
    const seen = await this.disk.statAll(paths);
    return new Set(paths.filter((p) => seen.get(p) === null));
  }

  /** Compares what the catalogue recorded (a field it never recorded, like the root's mode, is not a change). */
  differs(node: CatalogueNode, seen: EntryStat): boolean {
    if (node.kind === 'file' && node.sizeBytes !== seen.sizeBytes) return true;
    // A directory's mtime moves with every entry added or removed in it: not drift of the directory.
    if (node.kind !== 'directory' && node.mtime !== null && mtimeMs(node.mtime) !== mtimeMs(seen.mtime)) return true;
    const recorded = (a: number | null, b: number | null) => a !== null && a !== b;
    if (recorded(node.mode, seen.mode) || recorded(node.uid, seen.uid) || recorded(node.gid, seen.gid)) return true;
    if (node.kind === 'symlink' && (node.metadata.symlinkTarget ?? null) !== seen.symlinkTarget) return true;
    return false;
  }

  /** What the walk records of a file: its size and mtime (whole ms). */
  sameVersion(seen: EntryStat, hashed: FileVersion): boolean {
    return seen.sizeBytes === hashed.sizeBytes && mtimeMs(seen.mtime) === mtimeMs(hashed.mtime);
  }

}
