import { ancestorsOf, isSameOrDescendant, parentOf } from '../../shared/index-paths.ts';
import type { CoalescedBatch, NetChange, WatchEvent } from './types.ts';

export interface CoalescerOptions {
  /** Quiet time before a batch is due (FILESTORE_WATCH_DEBOUNCE_MS, default 200). */
  debounceMs: number;
  /** A batch is due at the latest this long after its first event, however busy the tree (default max(1 s, 5 × debounce)). */
  maxWaitMs?: number | undefined;
  /** Above this many distinct pending paths, they collapse into rescans of their directories (default 50,000). */
  maxPendingPaths?: number | undefined;
  /** How many directories a collapse may leave at most (default 64). */
  maxRescanDirs?: number | undefined;
  /** Called when a batch becomes due; the consumer then calls `take()`. */
  onDue: () => void;
}

export const DEFAULT_DEBOUNCE_MS = 200;
export const DEFAULT_MAX_PENDING_PATHS = 50_000;
const DEFAULT_MAX_RESCAN_DIRS = 64;

type EventType = WatchEvent['type'];
interface PendingPath {
  first: EventType;
  last: EventType;
  /** performance.now() of the last event (0: handed back by the sink, no event of its own). */
  at: number;
}

/**
 * What a path amounts to over one window, from its first and last event:
 * - created and removed again (an editor's temp file, vim's `4913` probe): nothing;
 * - removed and created again (an atomic save: temp file renamed over it): one change;
 * - otherwise the last event says it (created, changed, deleted).
 */
export function netChange(first: EventType, last: EventType): NetChange | null {
  if (last === 'delete') return first === 'create' ? null : 'deleted';
  if (first === 'create') return 'created';
  return 'changed';
}

/**
 * Debounces raw watcher events and coalesces them per path, in bounded memory.
 *
 * One trailing window for the whole mount (reset by every event, capped by `maxWaitMs`), not
 * one per path: a burst becomes one batch, which the drift sink judges with a handful of
 * statements. Memory is bounded by `maxPendingPaths`: past it, the pending paths collapse
 * into rescans of their common directories, and later events below those are absorbed.
 * Not guaranteed: that an atomic save never straddles two windows (then the sink sees the
 * path absent, then present; it still judges each against the disk, so at most one drift).
 */
export class Coalescer {
  private pending = new Map<string, PendingPath>();
  private rescans = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private firstAt = 0;
  private due = false;
  private readonly debounceMs: number;
  private readonly maxWaitMs: number;
  private readonly maxPending: number;
  private readonly maxRescanDirs: number;

  constructor(private readonly o: CoalescerOptions) {
    this.debounceMs = o.debounceMs;
    this.maxWaitMs = o.maxWaitMs ?? Math.max(1_000, 5 * o.debounceMs);
    this.maxPending = o.maxPendingPaths ?? DEFAULT_MAX_PENDING_PATHS;
    this.maxRescanDirs = Math.max(1, o.maxRescanDirs ?? DEFAULT_MAX_RESCAN_DIRS);
  }

  /** Distinct paths and rescan directories waiting. */
  get size(): number {
    return this.pending.size + this.rescans.size;
  }

  push(events: readonly WatchEvent[]): void {
    const at = performance.now();
    for (const e of events) {
      if (this.coveredByRescan(e.path)) continue;
      const p = this.pending.get(e.path);
      if (p) {
        p.last = e.type;
        p.at = at;
      } else this.pending.set(e.path, { first: e.type, last: e.type, at });
    }
    if (this.pending.size > this.maxPending) this.collapse();
    this.schedule(this.debounceMs);
  }

  /**
   * Paths to look at again later (held by a running command, waiting for a running listing,
   * or a batch that failed): pending as changed, due no sooner than `delayMs` unless other
   * events make a batch due first; `seenAt` keeps when the watcher reported them.
   */
  requeue(paths: readonly string[], delayMs = this.debounceMs, seenAt?: ReadonlyMap<string, number>): void {
    for (const path of paths) {
      if (!this.pending.has(path) && !this.coveredByRescan(path)) this.pending.set(path, { first: 'update', last: 'update', at: seenAt?.get(path) ?? 0 });
    }
    if (this.pending.size > this.maxPending) this.collapse();
    // A batch already on its way takes them along; otherwise they wait (maxWaitMs does not
    // cut a backoff short, but new events bring them along sooner).
    if (this.due || this.timer || this.size === 0) return;
    this.firstAt = Date.now();
    this.setTimer(Math.max(delayMs, this.debounceMs));
  }

  /** Subtrees to rescan whole (an overflow collapsed into directories). */
  requeueRescans(dirs: readonly string[]): void {
    for (const d of dirs) this.addRescan(d);
    this.schedule(this.debounceMs);
  }

  /** The due batch, if one is due (and resets the window); null otherwise. */
  take(): CoalescedBatch | null {
    return this.due ? this.drain() : null;
  }

  /** Everything pending, due or not (close, flush). */
  drain(): CoalescedBatch {
    const changes = new Map<string, NetChange>();
    const seenAt = new Map<string, number>();
    for (const [path, p] of this.pending) {
      const net = netChange(p.first, p.last);
      if (net === null) continue;
      changes.set(path, net);
      if (p.at > 0) seenAt.set(path, p.at);
    }
    const batch: CoalescedBatch = { changes, rescans: [...this.rescans], seenAt };
    this.pending = new Map();
    this.rescans = new Set();
    this.firstAt = 0;
    this.due = false;
    this.clearTimer();
    return batch;
  }

  /** Stops the timer (what is pending stays for `drain`). */
  stop(): void {
    this.clearTimer();
  }

  private schedule(delayMs: number): void {
    if (this.due || this.size === 0) return;
    const now = Date.now();
    if (this.firstAt === 0) this.firstAt = now;
    this.setTimer(Math.max(0, Math.min(delayMs, this.firstAt + this.maxWaitMs - now)));
  }

  private setTimer(wait: number): void {
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = null;
      this.due = true;
      this.o.onDue();
    }, wait);
    this.timer.unref?.();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private coveredByRescan(path: string): boolean {
    if (this.rescans.size === 0) return false;
    if (this.rescans.has(path)) return true;
    for (const a of ancestorsOf(path)) if (this.rescans.has(a)) return true;
    return false;
  }

  /**
   * Replaces the pending paths by rescans of their directories, going up the tree until at
   * most `maxRescanDirs` remain (at worst the mount root: a full audit).
   */
  private collapse(): void {
    let dirs = new Set<string>(this.rescans);
    for (const path of this.pending.keys()) dirs.add(parentOf(path) ?? '');
    while (dirs.size > this.maxRescanDirs) {
      const up = new Set<string>();
      for (const d of dirs) up.add(parentOf(d) ?? '');
      dirs = up;
    }
    this.pending = new Map();
    this.rescans = new Set();
    for (const d of dirs) this.addRescan(d);
  }

  private addRescan(dir: string): void {
    if (this.coveredByRescan(dir)) return;
    for (const r of [...this.rescans]) if (isSameOrDescendant(r, dir)) this.rescans.delete(r);
    for (const p of [...this.pending.keys()]) if (isSameOrDescendant(p, dir)) this.pending.delete(p);
    this.rescans.add(dir);
  }
}
