import { existsSync } from 'node:fs';
import path from 'node:path';
import parcel from '@parcel/watcher';
import { STAGING_DIR } from '../../../shared/index-paths.ts';
import { claimNewInotifyFds, inotifyFdsBeforeStart, inotifyWatchesOf } from '../inotify.ts';
import type { WatchBackend, WatchEvent, WatchHandlers } from '../types.ts';
import { MountPaths } from './mount-paths.ts';
import { classifyProblem } from './problems.ts';

/**
 * @parcel/watcher: native, one inotify watch per *directory* on Linux (a directory's watch
 * reports its files' changes too), and the initial crawl runs in C++ — the backend for large
 * trees. Events arrive in batches of create/update/delete with absolute paths.
 *
 * It watches a directory that appears, but not what that directory already holds: the mount
 * watcher checks new directories and calls `rewatch` when they have subdirectories.
 *
 * Known gap (documented in README.md): on Linux the library drops the kernel's
 * IN_Q_OVERFLOW notice without telling its caller, so a queue overflow is not seen here; the
 * mount watcher rescans after a burst that could have overflowed the queue, and the catch-up
 * rescan at start and the scheduled audits cover the rest. Errors it does report
 * ("Events were dropped", ENOSPC on a new directory) arrive through the callback.
 */
// The second spelling of a root for `rewatch` (Linux, where the library uses inotify).
const PROC_ROOT = '/proc/self/root';
const CAN_REWATCH = process.platform === 'linux' && existsSync(PROC_ROOT);
// The library's own backend, named: left to choose, it first asks for watchman through
// popen("watchman … get-sockname") and, where watchman is absent, throws before pclose — one
// `[sh] <defunct>` zombie per subscription, for the life of the process (issue 16).
const BACKEND: { backend?: parcel.BackendType } = process.platform === 'linux' ? { backend: 'inotify' } : {};
// How long an old subscription overlaps the new one after a rewatch.
const HANDOVER_MS = 1_000;

export class ParcelBackend implements WatchBackend {
  readonly kind = 'parcel' as const;
  private subscription: parcel.AsyncSubscription | null = null;
  private closed = false;
  private readonly paths: MountPaths;

  constructor(
    root: string,
    private readonly handlers: WatchHandlers,
  ) {
    this.paths = new MountPaths(root);
  }

  async start(): Promise<void> {
    const before = await inotifyFdsBeforeStart();
    this.subscription = await this.subscribe(this.paths.root);
    await claimNewInotifyFds(this.kind, before);
  }

  /**
   * A new subscription (a fresh crawl that watches every directory there is now), then the
   * old one dropped a second later: events of the overlap arrive twice, none is missed. Needed because the
   * library, on a directory's creation, watches that directory alone — subdirectories made
   * in it before its watch was added (`mkdir -p`, a tree moved or unpacked in) are never
   * watched (src/linux/InotifyBackend.cc, `handleSubscription`).
   *
   * The library keeps one directory tree per root path while a subscription holds it, and a
   * new subscription of the same path reuses it (without the directories it missed), so the
   * new one names the root by the other of two spellings: the path itself, or the same path
   * through /proc/self/root (the process's own root directory, a link the kernel resolves;
   * the root's last component is still the directory itself, so the crawl descends).
   */
  async rewatch(): Promise<void> {
    if (this.closed || !CAN_REWATCH) return;
    // The previous old subscription must be gone first: it holds the tree of the spelling used next.
    await this.handover;
    if (this.closed) return;
    const old = this.subscription;
    const spelling = this.watchRoot === this.paths.root ? `${PROC_ROOT}${this.paths.root}` : this.paths.root;
    const fresh = await this.subscribe(spelling);
    if (this.closed) {
      await fresh.unsubscribe();
      return;
    }
    this.subscription = fresh;
    // The old subscription goes once it has handed over what it holds: the library delivers
    // events up to MAX_WAIT_TIME (500 ms) late (src/Debounce.hh), and what happened before the
    // new one was up exists only there.
    this.retiring = old;
    this.handover = new Promise<void>((resolve) => {
      this.endHandover = resolve;
      const timer = setTimeout(resolve, HANDOVER_MS);
      timer.unref?.();
    }).then(() => this.retire());
  }

  private retiring: parcel.AsyncSubscription | null = null;
  private handover: Promise<void> = Promise.resolve();
  private endHandover: () => void = () => {};

  private async retire(): Promise<void> {
    const old = this.retiring;
    this.retiring = null;
    await old?.unsubscribe().catch((err: Error) => {
      if (!this.closed) this.handlers.onProblem(classifyProblem(err));
    });
  }

  private watchRoot: string | null = null;

  /** A subscription of the mount root, named `spelling`; events come back as paths below the real root. */
  private async subscribe(spelling: string): Promise<parcel.AsyncSubscription> {
    const prefix = spelling + path.sep;
    const subscription = await parcel.subscribe(
      spelling,
      (err, events) => {
        if (this.closed) return;
        if (err) this.handlers.onProblem(classifyProblem(err));
        const out: WatchEvent[] = [];
        for (const e of events ?? []) {
          const abs = e.path === spelling ? this.paths.root : e.path.startsWith(prefix) ? path.join(this.paths.root, e.path.slice(prefix.length)) : e.path;
          const mountPath = this.paths.toMountPath(abs);
          if (mountPath !== null) out.push({ type: e.type, path: mountPath });
        }
        if (out.length > 0) this.handlers.onEvents(out);
      },
      // Absolute paths are accepted; the library then skips the whole subtree.
      { ignore: [path.join(spelling, STAGING_DIR)], ...BACKEND },
    );
    this.watchRoot = spelling;
    return subscription;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.endHandover();
    await this.handover;
    await this.subscription?.unsubscribe();
    this.subscription = null;
  }

  watchCount(): Promise<number | null> {
    return inotifyWatchesOf(this.kind);
  }
}
