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
  /**
   * The whole body, when the caller holds it in memory (a small upload): the same bytes as
   * the stream, which a backend may then write from here instead of reading the stream.
   */
  bytes?: Buffer | undefined;
}

export interface TransferOptions {
  /** Replace an existing target (a directory target is replaced whole). */
  overwrite: boolean;
  /** The command's staging id (see WriteOptions): names what the operation stages, so recovery and the staging sweep know whose it is. */
  stagingId?: string | undefined;
}

export interface DeleteOptions {
  /** Delete a directory with its contents. */
  recursive: boolean;
  /** The command's staging id (see TransferOptions). */
  stagingId?: string | undefined;
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

/** A range as a client asks for it (RFC 9110 §14.1.2): from `start`, or the last `suffixLength` bytes. */
export type RangeRequest = ByteRange | { suffixLength: number };

/**
 * One version of a file, as the handle that reads it sees it: the open file's fstat (local)
 * or the GetObject answer (S3), never a stat taken beside it.
 */
export interface FileVersion {
  /** The whole file's size (not the range's). */
  sizeBytes: number;
  /** mtime (local, whole ms as the catalogue records it) or LastModified (S3). */
  mtime: Date | null;
  /** Inode change time (local): moves with any rewrite, even one that puts mtime back; null on S3. */
  ctime: Date | null;
  /** S3 ETag (quotes stripped); null on local disks. */
  etag: string | null;
  /**
   * Tells this version from others of the path: local, inode, size, mtime and ctime to the
   * nanosecond; S3, the ETag. Good as a weak HTTP validator, not as a content hash.
   */
  validator: string;
}

/** A file opened for reading: the version read, and a stream of exactly `length` of its bytes. */
export interface OpenedFile extends FileVersion {
  /**
   * Exactly `length` bytes of this version. A stream that cannot deliver them (the file
   * shrank, grew or was rewritten while read: FileChangedError; a storage failure) fails
   * before its last chunk instead of ending: its consumer never mistakes part of one
   * version, or a mix of two, for the whole.
   */
  stream: Readable;
  /** The bytes the stream holds (inclusive); null = the whole file. */
  range: Required<ByteRange> | null;
  /** Bytes in the stream: sizeBytes, or the range's length. */
  length: number;
}

/** The sha256 of one version of a file, with that version. */
export interface HashedFile extends FileVersion {
  sha256: string;
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

  /**
   * Opens a file (optionally a range of it) and says which version it is reading: what a
   * response describing the bytes (Content-Length, ETag) must be built from. A range
   * starting past the end (or a suffix of 0 bytes) is RANGE_NOT_SATISFIABLE with
   * details.sizeBytes. Throws NOT_FOUND / IS_A_DIRECTORY.
   */
  open(path: string, range?: RangeRequest): Promise<OpenedFile>;

  /** A file's bytes (optionally a range; past the end: none), as open's stream. Throws NOT_FOUND / IS_A_DIRECTORY. */
  read(path: string, range?: ByteRange): Promise<Readable>;

  /**
   * sha256 of one version of a file, streamed, with that version; null when the file changed
   * while it was read (local: size, mtime or ctime of the handle moved), so that no hash
   * describes it.
   */
  hash(path: string): Promise<HashedFile | null>;

  /**
   * Moves a file or tree, creating missing parent directories of the target. Refuses an
   * existing target with ALREADY_EXISTS unless overwrite (a directory target is then replaced
   * whole). Local: an atomic rename, EXDEV-safe.
   */
  move(from: string, to: string, options: TransferOptions): Promise<void>;

  /** Copies a file or tree, preserving mode and mtime where storage has them. Same target rules as move. */
  copy(from: string, to: string, options: TransferOptions): Promise<void>;

  /** Deletes a file, symlink or (with recursive) a tree. Directory without recursive must be empty. */
  delete(path: string, options: DeleteOptions): Promise<void>;

  /** Removes everything a command that did not finish staged (recovery, once its owner is gone). */
  discardStaging(stagingId: string): Promise<void>;

  /**
   * Throws UNAVAILABLE when the storage cannot be reached at all (a local mount's root gone,
   * renamed or unmounted): checked before a command touches storage, so such a command is
   * journaled failed at once (a retryable 503) instead of left pending until the root returns.
   * Optional: a backend without it (S3) answers through its operations.
   */
  ready?(): Promise<void>;
}
