import type { EntryStat, FileVersion, HashedFile } from '../../backends/types.ts';
import type { StorageRow } from '../../backends/entry-lines.ts';
import type { SkippedNames } from '../../backends/skipped.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';

/**
 * How one kind of storage is observed for reconciliation. Both implementations pass the
 * suite in tests/conformance/reconcile-suite.ts; the engine (reconciler.ts) is the same for both.
 */
export interface ReconcileStrategy {
  readonly kind: 'local' | 's3';
  /**
   * Throws MountUnhealthyError when the mount's root cannot be read at all. Returns the root's
   * identity where storage has one (local: device:inode; S3: null), compared by the engine with
   * the one the catalogue was audited against (shared/catalogue/root-identity.ts).
   */
  checkRoot(): Promise<string | null>;
  stat(path: string): Promise<EntryStat | null>;
  /** Entries below `dir` in byte order of path; recursive or direct children only; after `startAfter` when resuming. */
  list(dir: string, recursive: boolean, startAfter?: string): AsyncIterable<EntryStat>;
  /**
   * The same listing in batches of rows (one await per batch; rows compare by line, see
   * backends/entry-lines.ts). Names it passes over are added to `skipped` (backends/skipped.ts).
   */
  listRows(dir: string, recursive: boolean, startAfter?: string, skipped?: SkippedNames): AsyncIterable<StorageRow[]>;
  /** True when what the catalogue recorded differs from what storage holds (same kind). */
  differs(node: CatalogueNode, seen: EntryStat): boolean;
  /** The second look before MISSING: those of `paths` that are still absent. */
  confirmGone(paths: string[]): Promise<Set<string>>;
  /** The sha256 of one version of a file, with that version; null when it changed while it was read. */
  hash(path: string): Promise<HashedFile | null>;
  /** True when `hashed` is the version the walk saw as `seen` (so the hash describes what `seen` records). */
  sameVersion(seen: EntryStat, hashed: FileVersion): boolean;
}
