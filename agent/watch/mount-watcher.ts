import type { Mount } from '../../shared/catalogue/index.ts';
import type { Filestore } from '../../shared/index-runtime.ts';
import { chooseBackend, createWatchBackend, type BackendDecision } from './backends/index.ts';
import { classifyProblem, isWatchLimit } from './backends/problems.ts';
import { Coalescer, DEFAULT_DEBOUNCE_MS } from './coalescer.ts';
import { DriftSink, type DriftSinkOptions } from './drift-sink.ts';
import { watchNewDirs } from './new-dirs.ts';
import { ProblemLog } from './problem-log.ts';
import { NotALocalMountError, WatchOptionsError, WatchStartError } from './errors.ts';
import { maxQueuedEvents } from './inotify.ts';
import { RescanRequests } from './rescans.ts';
import { RootGuard, type RootApproval, type RootLookPurpose } from './root-guard.ts';
import type { RootLook } from '../../shared/backends/local/index.ts';
import {
  WATCH_BACKEND_CHOICES,
  type CoalescedBatch,
  type WatchBackend,
  type WatchBackendChoice,
  type WatchBackendFactory,
  type WatchBackendKind,
  type WatchEvent,
  type WatchProblem,
} from './types.ts';

export interface MountWatcherOptions {
  /** `chokidar`, `parcel`, `dirs` or `auto` (parcel, or dirs for a large tree of big directories: backends/choose.ts). Default `auto`. */
  backend?: WatchBackendChoice | undefined;
  /** FILESTORE_WATCH_DEBOUNCE_MS (default 200). */
  debounceMs?: number | undefined;
  /** Pending distinct paths before they collapse into directory rescans (default 50,000). */
  maxPendingPaths?: number | undefined;
  /**
   * Under `auto`, trees with fewer entries than this get chokidar (default: none — parcel for
   * every tree; `autoThreshold()` in backends/choose.ts gives one that fits the host's inotify budget).
   */
  autoThreshold?: number | undefined;
  /** Under `auto`, trees of at least this many entries, 20 or more files per directory, get `dirs` (default 100,000; backends/choose.ts). */
  autoDirsFrom?: number | undefined;
  /** Enqueue a full rescan at start, for changes made while nothing watched (default true). */
  catchUp?: boolean | undefined;
  /** At most one full rescan request per this many ms after the first (default 30,000); later ones wait, never drop. */
  rescanCooldownMs?: number | undefined;
  /** How soon paths held by a running command are looked at again (default max(debounce, 500 ms)). */
  retryDelayMs?: number | undefined;
  /** How often the mount root is looked at, to notice it gone, replaced or back (default 2,000 ms; root-guard.ts). */
  rootCheckMs?: number | undefined;
  /** The look at the root (default root-check.ts's `lookAtRoot`); tests inject failures (EIO…). */
  rootLook?: ((rootPath: string, why: RootLookPurpose) => Promise<RootLook>) | undefined;
  sink?: DriftSinkOptions | undefined;
  /**
   * Events the backend reports between two batches (about one per path; the kernel queues
   * several per new file) at which a burst may have overflowed the kernel's event
   * queue unannounced, so a full rescan is requested (default: half of
   * fs.inotify.max_queued_events; none where that cannot be read).
   */
  overflowRiskEvents?: number | undefined;
  /** Creates backends (default: the real ones); tests wrap it to inject problems. */
  backendFactory?: WatchBackendFactory | undefined;
  log?: ((line: string) => void) | undefined;
}

export interface MountWatcherStats {
  mountId: string;
  mountKey: string;
  choice: WatchBackendChoice;
  /** The backend running now; null before start and after close. */
  backend: WatchBackendKind | null;
  /** inotify watches held by this process's watchers of that kind (all mounts together); null if unmeasurable. */
  watches: number | null;
  /** Distinct paths and rescan directories waiting for the next batch. */
  pending: number;
  batches: number;
  drift: number;
  /** Full rescans requested (catch-up, overflow, errors, the root back). */
  rescans: number;
  /** Times the backend re-read the tree to watch directories that appeared with subdirectories (parcel). */
  rewatches: number;
  problems: number;
  /** Why the mount root is not watched right now (gone, replaced by a symlink or a file…); null while it is. */
  rootProblem: string | null;
}

const MAX_RETRY_DELAY_MS = 30_000;

/**
 * Watches one local mount: backend events → coalescer → drift sink, one batch at a time.
 *
 * Never silent loss: a backend error or overflow counts in
 * filestore_watcher_events_total{event="overflow"|"error"} and requests a full rescan of the
 * mount (a reconcile job, reason `audit`); requests within the cooldown wait for its end and
 * are never dropped. A batch that fails (database unreachable) is handed back and retried with
 * backoff; paths a command holds are looked at again shortly. `close()` stops the backend and
 * judges what is pending; paths still held then get reconcile jobs instead.
 */
export class MountWatcher {
  private readonly coalescer: Coalescer;
  private readonly sink: DriftSink;
  private readonly guard: RootGuard;
  private readonly choice: WatchBackendChoice;
  private readonly factory: WatchBackendFactory;
  private readonly log: (line: string) => void;
  private readonly retryDelayMs: number;
  private backend: WatchBackend | null = null;
  private root: string | null = null;
  private decision: BackendDecision | null = null;
  /** The backend kind started last (parcel after a fall-back): what watches the root again when it returns. */
  private kind: WatchBackendKind | null = null;
  private loop: Promise<void> | null = null;
  private starting: Promise<void> | null = null;
  private switching: Promise<void> | null = null;
  private closed = false;
  private failures = 0;
  private readonly rescans: RescanRequests;
  private readonly counts = { batches: 0, drift: 0, rewatches: 0 };
  private readonly problems: ProblemLog;
  /** Events reported since the last batch was taken; a rescan is requested once they reach overflowRiskAt. */
  private eventsSinceBatch = 0;
  private overflowRiskAt: number | null = null;
  private overflowRiskSeen = false;

  constructor(
    private readonly core: Filestore,
    readonly mount: Mount,
    private readonly o: MountWatcherOptions = {},
  ) {
    if (mount.kind !== 'local' || !mount.rootPath) throw new NotALocalMountError(mount.key);
    this.choice = o.backend ?? 'auto';
    if (!WATCH_BACKEND_CHOICES.includes(this.choice)) {
      throw new WatchOptionsError(`unknown watcher backend "${String(this.choice)}": use chokidar, parcel or auto`, { backend: this.choice });
    }
    const debounceMs = o.debounceMs ?? DEFAULT_DEBOUNCE_MS;
    if (!Number.isFinite(debounceMs) || debounceMs < 0) throw new WatchOptionsError('the watch debounce must be a number of milliseconds ≥ 0', { debounceMs });
    this.factory = o.backendFactory ?? createWatchBackend;
    this.log = o.log ?? (() => {});
    this.retryDelayMs = o.retryDelayMs ?? Math.max(debounceMs, 500);
    this.problems = new ProblemLog(mount.key, (event) => core.metrics.watcherEvents.inc({ mount: mount.key, event }), this.log);
    this.coalescer = new Coalescer({ debounceMs, maxPendingPaths: o.maxPendingPaths, onDue: () => this.kick() });
    this.sink = new DriftSink(core, mount, o.sink);
    this.rescans = new RescanRequests(core, mount, o.rescanCooldownMs ?? 30_000, this.log);
    this.guard = new RootGuard(
      core,
      mount,
      { suspend: () => this.suspend(), resume: () => this.resume(), rescan: (why, urgent) => (urgent ? this.rescans.immediately(why) : this.rescans.request(why)) },
      { checkMs: o.rootCheckMs, look: o.rootLook, log: this.log },
    );
  }

  /**
   * Chooses the backend, starts watching, then (unless `catchUp: false`) requests the catch-up
   * rescan. A `close()` meanwhile wins: nothing more is started or requested, and this rejects.
   */
  async start(): Promise<BackendDecision> {
    // The root as it is now (the mount marked unhealthy if it is not a readable directory).
    const look = await this.guard.begin();
    if (!look.ok) throw new WatchStartError(this.mount.key, { message: look.reason, code: look.code }, false);
    this.root = look.real;
    this.overflowRiskAt = this.o.overflowRiskEvents ?? (await overflowRiskThreshold());
    const decision = await chooseBackend({ pool: this.core.pool, mount: this.mount, root: this.root, choice: this.choice, threshold: this.o.autoThreshold, dirsFrom: this.o.autoDirsFrom });
    this.decision = decision;
    this.notClosed();
    this.log(`watcher ${this.mount.key}: ${decision.kind} (${decision.reason})`);
    this.starting = this.startBackend(decision.kind);
    try {
      await this.starting;
    } catch (err) {
      const problem = classifyProblem(err);
      if (this.closed || !(this.choice === 'auto' && decision.kind === 'chokidar' && isWatchLimit(problem))) {
        this.problems.record(problem);
        throw new WatchStartError(this.mount.key, problem, isWatchLimit(problem));
      }
      this.log(`watcher ${this.mount.key}: chokidar ran out of inotify watches at start; using parcel`);
      this.starting = this.startBackend('parcel');
      await this.starting;
      this.decision = { ...decision, kind: 'parcel', reason: `${decision.reason}; chokidar ran out of inotify watches` };
    }
    this.notClosed(); // close() stops the backend it finds once this start is over
    this.guard.watch();
    // After the backend is up, so a change made during the rescan is seen by one or the other.
    if (this.o.catchUp !== false) await this.rescans.now('catch-up');
    this.notClosed();
    return this.decision;
  }

  private notClosed(): void {
    if (this.closed) throw new WatchStartError(this.mount.key, { message: 'the watcher was closed while it started', code: 'CLOSED' }, false);
  }

  /** Judges everything pending now (tests, and an agent that wants a quiet point). */
  async flush(): Promise<void> {
    await this.loop;
    await this.applyBatch(this.coalescer.drain(), false);
    await this.loop;
  }

  /** Stops watching, judges what is pending, and waits for rescan requests in flight. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.guard.stop();
    this.rescans.stop();
    await this.starting?.catch(() => {}); // a start in progress: its backend is closed below
    await this.switching;
    await this.backend?.close().catch((e: Error) => this.log(`watcher ${this.mount.key}: close: ${e.message}`));
    this.backend = null;
    this.coalescer.stop();
    await this.loop;
    await this.applyBatch(this.coalescer.drain(), true);
    await this.rescans.close();
  }

  async stats(): Promise<MountWatcherStats> {
    return {
      mountId: this.mount.id,
      mountKey: this.mount.key,
      choice: this.choice,
      backend: this.backend?.kind ?? null,
      watches: this.backend ? await this.backend.watchCount() : null,
      pending: this.coalescer.size,
      ...this.counts,
      problems: this.problems.count,
      rescans: this.rescans.count,
      rootProblem: this.guard.problem,
    };
  }

  private async startBackend(kind: WatchBackendKind): Promise<void> {
    const backend = this.factory(kind, this.root as string, {
      onEvents: (events) => this.onEvents(events),
      onProblem: (problem) => this.onProblem(problem, backend),
    });
    this.backend = backend;
    this.kind = kind;
    try {
      await backend.start();
    } catch (err) {
      this.backend = null;
      await backend.close().catch(() => {});
      throw err;
    }
  }

  /** The root is gone or is not the directory watched (root-guard.ts): the backend stops, pending paths are dropped. */
  private async suspend(): Promise<void> {
    await this.switching;
    await this.starting?.catch(() => {});
    const backend = this.backend;
    this.backend = null;
    await backend?.close().catch((e: Error) => this.log(`watcher ${this.mount.key}: close: ${e.message}`));
    // Paths of a root that is no longer there: judged now they would all read as deleted. The
    // full rescan requested when the root is back covers them.
    this.coalescer.drain();
    this.eventsSinceBatch = 0;
  }

  /** The root is a readable directory again: watched anew (the same backend); the guard requests the rescan. */
  private async resume(): Promise<void> {
    if (this.closed) return;
    this.starting = this.startBackend(this.kind ?? this.decision?.kind ?? 'parcel');
    await this.starting;
  }

  private onEvents(events: WatchEvent[]): void {
    if (this.closed) return;
    const byType = { create: 0, update: 0, delete: 0 };
    for (const e of events) {
      byType[e.type]++;
      // The root itself changed (removed, renamed): look at it now rather than at the next tick.
      if (e.path === '') this.guard.poke();
    }
    for (const [event, n] of Object.entries(byType)) if (n > 0) this.core.metrics.watcherEvents.inc({ mount: this.mount.key, event }, n);
    this.coalescer.push(events);
    this.eventsSinceBatch += events.length;
    if (this.overflowRiskAt !== null && !this.overflowRiskSeen && this.eventsSinceBatch >= this.overflowRiskAt) this.onOverflowRisk();
  }

  /**
   * A burst big enough that the kernel's queue may have overflowed: on Linux neither backend
   * passes the kernel's overflow notice on (parcel drops it; libuv, under chokidar, ignores
   * it), so a loss would be silent. Counted in filestore_watcher_events_total{event="overflow_risk"}
   * and answered with a full rescan (the cooldown applies), once per batch.
   */
  private onOverflowRisk(): void {
    this.overflowRiskSeen = true;
    this.core.metrics.watcherEvents.inc({ mount: this.mount.key, event: 'overflow_risk' });
    this.problems.atMostPerMinute(
      'overflow_risk',
      `watcher ${this.mount.key}: ${this.eventsSinceBatch} events since the last batch, enough to overflow the kernel's event queue ` +
        `(fs.inotify.max_queued_events) without notice; full rescan requested`,
    );
    this.rescans.request('overflow risk');
  }

  private onProblem(problem: WatchProblem, from: WatchBackend): void {
    if (this.closed) return;
    this.guard.poke(); // a watcher error is often the root going away
    this.problems.record(problem, '; full rescan requested');
    this.rescans.request(problem.kind);
    if (isWatchLimit(problem) && this.choice === 'auto' && from.kind === 'chokidar') this.fallBackToParcel(from);
  }

  /** chokidar ran out of inotify watches under `auto`: the tree outgrew it; parcel needs one watch per directory only. */
  private fallBackToParcel(from: WatchBackend): void {
    if (this.switching) return;
    this.switching = (async () => {
      await this.starting?.catch(() => {});
      if (this.closed || this.backend !== from) return;
      this.log(`watcher ${this.mount.key}: chokidar ran out of inotify watches; moving to parcel`);
      await from.close();
      this.backend = null;
      this.starting = this.startBackend('parcel');
      await this.starting;
    })()
      .catch((err: Error) => {
        this.problems.record(classifyProblem(err), '; full rescan requested');
        this.rescans.request('error');
      })
      .finally(() => {
        this.switching = null;
      });
  }

  /** New directories of a batch (new-dirs.ts `watchNewDirs`): the tree watched anew where needed, what they hold looked at; returns those to look at recursively. */
  private async watchNewDirs(dirs: readonly string[], walked: string[]): Promise<string[]> {
    const backend = this.backend;
    if (!backend) return [];
    return watchNewDirs(
      { backend, root: this.root as string, pool: this.core.pool, mountId: this.mount.id, mountKey: this.mount.key, log: this.log },
      dirs,
      walked,
      {
        rewatched: () => this.counts.rewatches++,
        failed: (err) => {
          this.problems.record(classifyProblem(err), '; full rescan requested');
          this.rescans.request('rewatch');
        },
      },
    );
  }

  /** Runs due batches one at a time. */
  private kick(): void {
    if (this.loop) return;
    this.loop = (async () => {
      for (let batch = this.coalescer.take(); batch !== null; batch = this.coalescer.take()) {
        this.eventsSinceBatch = 0;
        this.overflowRiskSeen = false;
        await this.applyBatch(batch, false);
      }
    })().finally(() => {
      this.loop = null;
    });
  }

  private async applyBatch(batch: CoalescedBatch, final: boolean): Promise<void> {
    if (batch.changes.size === 0 && batch.rescans.length === 0) return;
    // Only paths of the root watched are judged, against the root approved for this batch: a
    // root gone or replaced would read as every path deleted (see root-guard.ts); the rescan
    // when it is back covers them.
    const verdict = final ? await this.guard.confirmFinal() : await this.guard.confirm();
    if (verdict.state !== 'watched') {
      if (final) this.log(`watcher ${this.mount.key}: the mount root is not there; ${batch.changes.size} paths left to the next start's catch-up rescan`);
      // The look failed (EIO…) without the root being gone: judged later, unless watching stops meanwhile (which drops them).
      else if (verdict.state === 'unsure') this.requeueBatch(batch, this.retryDelayMs);
      return;
    }
    const approval = verdict.approval;
    try {
      const walked: string[] = [];
      const newDirs = this.backend && !final ? (dirs: string[]) => this.watchNewDirs(dirs, walked) : undefined;
      const r = await this.sink.apply(batch, { final, beforeJobs: newDirs, rootUnchanged: () => this.guard.stillApproved(approval) });
      this.counts.batches++;
      this.counts.drift += r.drift;
      this.failures = 0;
      // Handed back for a later batch only while the approved root is still the one watched:
      // once watching stopped (the coalescer was cleared), they are paths of a root that went,
      // and would otherwise be judged against whatever directory is watched next.
      if (!this.handBackAllowed(approval)) return;
      if (r.deferred.length > 0) this.coalescer.requeue(r.deferred, this.retryDelayMs);
      if (r.waiting.length > 0) this.coalescer.requeue(r.waiting, this.retryDelayMs, batch.seenAt);
      // What new directories held (watchNewDirs): judged by the next batch, as changed (not
      // created: they are not looked at again as new directories).
      if (walked.length > 0) this.coalescer.requeue(walked, 0);
    } catch (err) {
      this.failures++;
      this.problems.record({ kind: 'error', message: `drift batch failed: ${(err as Error).message}`, code: (err as { code?: string }).code }, '; retrying');
      if (final) {
        // The process is stopping and the catalogue is unreachable: the catch-up rescan at the next start covers these.
        this.log(`watcher ${this.mount.key}: ${batch.changes.size} paths left to the next start's catch-up rescan`);
        return;
      }
      if (!this.handBackAllowed(approval)) return;
      this.requeueBatch(batch, Math.min(MAX_RETRY_DELAY_MS, this.retryDelayMs * 2 ** Math.min(this.failures, 10)));
    }
  }

  private handBackAllowed(approval: RootApproval): boolean {
    return this.guard.isCurrent(approval);
  }

  private requeueBatch(batch: CoalescedBatch, delayMs: number): void {
    this.coalescer.requeue([...batch.changes.keys()], delayMs);
    this.coalescer.requeueRescans(batch.rescans);
  }
}

/** Half the kernel's event queue (fs.inotify.max_queued_events), or null where it cannot be read. */
async function overflowRiskThreshold(): Promise<number | null> {
  const queued = await maxQueuedEvents();
  return queued === null ? null : Math.max(1, Math.floor(queued / 2));
}
