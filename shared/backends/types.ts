import type { Readable } from 'node:stream';

export type NodeKind = 'file' | 'directory' | 'symlink';

/** What storage says about one entry. Paths are canonical and mount-relative (see paths.ts). */
export interface EntryStat {
  path: string;
  kind: NodeKind;
  /** Bytes for files; 0 for directories and symlinks. */
  sizeBytes: number;
  /** POSIX permission bits and type (local); null on S3. */
  mode: number | null;
  uid: number | null;
  gid: number | null;
  /** Modification time (local) or LastModified (S3); null for implicit S3 directories. */
  mtime: Date | null;
  /** S3 ETag (quotes stripped); null on local disks. */
  etag: string | null;
  /** Target of a symlink, as stored; null otherwise. Never followed. */
  symlinkTarget: string | null;
}

/** The result of a completed write: the stat of the new file plus the sha256 computed while streaming. */
export interface WriteResult extends EntryStat {
  sha256: string;
}

export interface WriteOptions {
  /** Unique per command; names the staging object so recovery can find and remove leftovers. */
  stagingId: string;
  /** When set, the write fails with CHECKSUM_MISMATCH (and leaves nothing behind) unless the bytes hash to it. */
  expectedSha256?: string | undefined;
  /** Permission bits for a new local file (default 0o644 & ~umask). */
  mode?: number | undefined;
  /**
   * Called once the bytes are staged, durable and verified, just before they become visible
   * at the path (the rename, or the copy out of staging). The orchestrator journals the hash
   * here, so recovery can tell whether the file at the path is this write's. If it throws,
   * nothing becomes visible.
   */
  beforeCommit?: ((staged: { sha256: string; sizeBytes: number }) => Promise<void>) | undefined;
}

export interface ListOptions {
  recursive?: boolean | undefined;
  startAfter?: string | undefined;
}

export interface ByteRange {
  /** First byte, inclusive. */
  start: number;
  /** Last byte, inclusive; omitted = to the end. */
  end?: number | undefined;
}

/**
 * One storage backend (a local directory tree or an S3 bucket/prefix). Implementations:
 * shared/backends/local/local-executor.ts and shared/backends/s3/s3-executor.ts; both pass
 * the suite in tests/conformance/backend-suite.ts
 * (run by tests/backend-local.test.ts and tests/backend-s3.test.ts).
 *
 * Rules every implementation keeps:
 * - paths are canonical (normalizePath) and never resolve outside the mount root;
 * - errors are FilestoreErrors with stable codes: NOT_FOUND, ALREADY_EXISTS, NOT_A_DIRECTORY,
 *   IS_A_DIRECTORY, DIRECTORY_NOT_EMPTY, SYMLINK_IN_PATH, PATH_ESCAPES_MOUNT, CHECKSUM_MISMATCH,
 *   STORAGE_ERROR;
 * - a failed operation leaves no partial object at the target path;
 * - every operation is safe to repeat after a crash (recovery relies on it).
 */
export interface Backend {
  readonly kind: 'local' | 's3';

  /** lstat semantics: a symlink is reported as kind 'symlink'; null when absent. The root "" is a directory. */
  stat(path: string): Promise<EntryStat | null>;

  /**
   * Entries below a directory, in byte order of path (COLLATE "C" order), excluding the directory itself.
   * recursive=false lists direct children only. Throws NOT_FOUND / NOT_A_DIRECTORY.
   * startAfter: only entries whose path sorts after it (resuming a long listing; S3 starts
   * the listing there, other backends skip what comes before).
   */
  list(dir: string, options?: ListOptions): AsyncIterable<EntryStat>;

  /** The same listing in order, in batches (a directory window, an S3 page): one await per batch for a consumer of a whole tree. */
  listBatches(dir: string, options?: ListOptions): AsyncIterable<EntryStat[]>;

  /**
   * Creates a directory. parents=true creates missing ancestors and succeeds if it already exists
   * as a directory; parents=false requires the parent to exist and the target to be absent.
   */
  mkdir(path: string, options: { parents: boolean }): Promise<EntryStat>;

  /**
   * Streams `body` to `path`, creating missing parent directories, replacing an existing file
   * atomically (readers see the old or the new bytes, never a mix). Constant memory.
   */
  writeFile(path: string, body: Readable, options: WriteOptions): Promise<WriteResult>;

  /** Streams a file's bytes (optionally a range). Throws NOT_FOUND / IS_A_DIRECTORY. */
  read(path: string, range?: ByteRange): Promise<Readable>;

  /** sha256 of a file's current bytes, streamed. */
  hash(path: string): Promise<string>;

  /**
   * Moves a file or tree, creating missing parent directories of the target. Refuses an
   * existing target with ALREADY_EXISTS unless overwrite (a directory target is then replaced
   * whole). Local: an atomic rename, EXDEV-safe.
   */
  move(from: string, to: string, options: { overwrite: boolean }): Promise<void>;

  /** Copies a file or tree, preserving mode and mtime where storage has them. Same target rules as move. */
  copy(from: string, to: string, options: { overwrite: boolean }): Promise<void>;

  /** Deletes a file, symlink or (with recursive) a tree. Directory without recursive must be empty. */
  delete(path: string, options: { recursive: boolean }): Promise<void>;

  /** Removes staging leftovers of a command that did not finish (recovery). */
  discardStaging(stagingId: string): Promise<void>;
}
