/**
 * The vocabulary of the watcher subsystem: what a backend reports (raw events and problems),
 * what the coalescer hands the drift sink, and the backend choice per mount.
 */

/** Watcher implementations (see backends/). */
export type WatchBackendKind = 'chokidar' | 'parcel' | 'dirs';

/** What a mount asks for: a backend, or `auto` (dirs for a large tree of big directories, else parcel; chokidar only below an explicit threshold: backends/choose.ts). */
export type WatchBackendChoice = WatchBackendKind | 'auto';

export const WATCH_BACKEND_CHOICES: readonly WatchBackendChoice[] = ['chokidar', 'parcel', 'dirs', 'auto'];

/**
 * One raw file system event. `path` is canonical and mount-relative (shared/paths.ts: NFC,
 * '/'-separated, the mount root is ""). A backend never reports the staging area.
 * The type is a hint only: the drift sink looks at the disk before it judges anything.
 */
export interface WatchEvent {
  type: 'create' | 'update' | 'delete';
  path: string;
}

/**
 * Something that may have cost events. `overflow`: coverage was lost (the kernel dropped
 * events, the inotify watch budget or file descriptors ran out): only a rescan restores it.
 * `error`: anything else the watcher reported (a directory it could not read, …).
 */
export interface WatchProblem {
  kind: 'overflow' | 'error';
  message: string;
  /** errno-style code when there is one (ENOSPC, EMFILE, EACCES…). */
  code?: string | undefined;
}

export interface WatchHandlers {
  onEvents(events: WatchEvent[]): void;
  onProblem(problem: WatchProblem): void;
}

/**
 * One watcher of one mount's tree. Implementations: backends/chokidar.ts, backends/parcel.ts,
 * backends/dirs.ts. Rules all keep: never follow symlinks, never report anything in or below STAGING_DIR,
 * report paths relative to the mount root, report errors and overflow through `onProblem`
 * (never swallow them).
 */
export interface WatchBackend {
  readonly kind: WatchBackendKind;
  /** Resolves once the tree is watched (events from then on are reported). */
  start(): Promise<void>;
  /** Stops watching; no handler is called after it resolves. */
  close(): Promise<void>;
  /**
   * For a backend that does not look inside a directory that appears (parcel: it watches the
   * new directory alone, so subdirectories already in it stay unwatched): reads the tree again
   * and watches all of it, without a gap (the new watch is up before the old one goes).
   */
  rewatch?(): Promise<void>;
  /**
   * inotify watches held by this process for backends of this kind (all mounts together),
   * measured from /proc/self/fdinfo; null where that cannot be measured (not Linux).
   */
  watchCount(): Promise<number | null>;
}

/** Creates a backend for a mount root (an absolute, real path). Tests wrap it to inject problems. */
export type WatchBackendFactory = (kind: WatchBackendKind, root: string, handlers: WatchHandlers) => WatchBackend;

/** What a path amounts to over one debounce window (see coalescer.ts). */
export type NetChange = 'created' | 'changed' | 'deleted';

/** One coalesced batch: the paths to judge, and subtrees to rescan whole (collapsed when too many paths were pending). */
export interface CoalescedBatch {
  changes: Map<string, NetChange>;
  rescans: string[];
  /**
   * When the watcher reported each path last (performance.now() of this process), for paths
   * it reported in this window; paths handed back by the sink (held by a command) have none.
   */
  seenAt?: ReadonlyMap<string, number> | undefined;
}
