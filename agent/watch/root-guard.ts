import { anotherRootReason, lookAtRoot, type RootLook } from '../../shared/backends/local/index.ts';
import { setMountHealth, recordedRootIdentity, type Mount } from '../../shared/catalogue/index.ts';
import type { Filestore } from '../../shared/index-runtime.ts';

/** How often a watched mount's root is looked at, by default (an lstat of the root and of its staging area, and an access check). */
export const DEFAULT_ROOT_CHECK_MS = 2_000;
// Longest wait between tries to watch a root that is back but could not be watched (ENOSPC…).
const MAX_RETRY_MS = 30_000;
/**
 * Failed looks in a row (an error other than the root being gone or replaced: EIO, ESTALE,
 * EACCES… of a network filesystem's hiccup) before the watcher acts on them.
 */
export const BAD_LOOKS_TO_ACT = 3;

/** Why the guard looks: at start, on its timer, before a batch, after a chunk's lstats. */
export type RootLookPurpose = 'begin' | 'tick' | 'batch' | 'chunk';

/** What the mount watcher does when its root goes and comes back. */
export interface RootGuardHooks {
  /** The root is gone or is not the directory watched: stop watching it and drop what is pending (the rescan on its return covers it). */
  suspend(): Promise<void>;
  /** The root is a readable directory again: watch it anew. Throws when it could not be watched (tried again later). */
  resume(): Promise<void>;
  /** Request a full rescan: `urgent` at once (the root was gone or is another directory), otherwise through the cooldown. */
  rescan(why: string, urgent: boolean): void;
}

export interface RootGuardOptions {
  /** Between two looks at the root (default 2,000 ms). */
  checkMs?: number | undefined;
  /** The look itself (default `lookAtRoot`); tests inject failures. */
  look?: ((rootPath: string, why: RootLookPurpose) => Promise<RootLook>) | undefined;
  log: (line: string) => void;
}

/** The root a batch was judged against: it is the mount's while the guard's epoch and the root's identity are the same. */
export interface RootApproval {
  readonly epoch: number;
  readonly id: string;
}

/** What a look before a batch says: judge it against `approval`, drop it (the root is gone), or try it again later (the look failed). */
export type BatchVerdict = { state: 'watched'; approval: RootApproval } | { state: 'lost' } | { state: 'unsure' };

type Health = { state: 'healthy' | 'unhealthy'; reason: string | null };

/**
 * Keeps a mount watcher on its root. inotify watches an inode, not a path: a root removed and
 * made again (or renamed away and back, replaced, a disk unmounted and mounted again) leaves
 * both backends watching nothing, or the directory renamed away, while what happens in the
 * new root goes unseen. So the root is looked at every `checkMs` and before each batch is
 * judged (`lookAtRoot`: lstat, never followed, its device:inode compared with the one watched):
 *
 * - gone, or no longer a directory (a symlink, a file), or another directory: watching stops at
 *   once, pending paths are dropped and nothing is judged — a vanished root must not read as
 *   every file deleted; the mount is `unhealthy` with the reason; one log line. Any other
 *   failure (EIO, ESTALE, EACCES: a network filesystem's hiccup) is acted on only after
 *   BAD_LOOKS_TO_ACT looks in a row; meanwhile batches wait;
 * - a readable directory again: a full rescan is requested (at once if the root was gone or is
 *   another directory, through the cooldown after a mere run of failed looks), and it is
 *   watched anew (tried again with backoff if that fails, with another rescan once it works).
 *
 * Each batch is judged against the root approved for it (`RootApproval`): a chunk whose lstats
 * ran while the guard suspended (even if it resumed on the same directory meanwhile) or while
 * the root became another directory is dropped, and so is whatever the batch would hand back.
 *
 * Health is the shared look's verdict (root-check.ts: the root, its staging area) and the
 * catalogue's recorded root (shared/catalogue/root-identity.ts: another directory than the one
 * audited is unhealthy until an audit accepts it). It is written when the verdict changes (and
 * retried at the next look if the catalogue could not be reached), not on every look.
 */
export class RootGuard {
  private readonly checkMs: number;
  private readonly lookFn: (rootPath: string, why: RootLookPurpose) => Promise<RootLook>;
  /** The root being watched; null while it is not (gone, replaced, or not yet watched again). */
  private watched: { id: string } | null = null;
  /** Incremented each time watching stops: approvals of earlier epochs are void. */
  private epoch = 0;
  /** Why the root is not watched now. */
  private lost: string | null = null;
  /** The identity watched last, and whether the root was really gone (or another one) since: decides how urgent the return's rescan is. */
  private lastId: string | null = null;
  private wasGone = false;
  /** The directory watched was found replaced by another one (said so when that one is watched). */
  private replaced = false;
  /** The return's rescan was requested (a watch that works later asks for one more, through the cooldown). */
  private returnRescanned = false;
  /** Failed looks in a row (not counting a root certainly gone). */
  private bad = 0;
  /** What the looks found, as a key: health is decided again when it changes. */
  private verdictKey: string | null = null;
  private health: (Health & { written: boolean }) | null = null;
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private failures = 0;
  private stopped = false;

  constructor(
    private readonly core: Filestore,
    private readonly mount: Mount,
    private readonly hooks: RootGuardHooks,
    private readonly o: RootGuardOptions,
  ) {
    this.checkMs = o.checkMs ?? DEFAULT_ROOT_CHECK_MS;
    this.lookFn = o.look ?? ((root) => lookAtRoot(root));
  }

  /** Why the root is not being watched right now (null while it is). */
  get problem(): string | null {
    return this.lost;
  }

  /**
   * The first look, before the backend starts (a change after it is then seen by the next
   * look). Returns what it found; the mount's health is written when it differs from the row
   * read at start.
   */
  async begin(): Promise<RootLook> {
    const look = await this.lookFn(this.rootPath, 'begin');
    if (look.ok) {
      this.watched = { id: look.id };
      this.lastId = look.id;
    } else this.lost = look.reason;
    await this.judgeHealth(look, this.mount.health === 'unknown' ? undefined : { state: this.mount.health, reason: this.mount.healthReason });
    return look;
  }

  /** Starts the periodic looks (after the backend is up). */
  watch(): void {
    this.schedule(this.checkMs);
  }

  /** Looks at once (a backend reported something about the root). */
  poke(): void {
    if (this.stopped) return;
    this.schedule(0);
  }

  /** Before a batch is judged: the root it is judged against, or why not (see BatchVerdict). */
  confirm(): Promise<BatchVerdict> {
    return this.serial(async () => {
      const r = await this.look('batch');
      if (r === 'unsure') return { state: 'unsure' } as const;
      return r && this.watched ? { state: 'watched', approval: { epoch: this.epoch, id: this.watched.id } } : ({ state: 'lost' } as const);
    });
  }

  /** The same, acting on nothing (the final batch at close, once the guard is stopped). */
  async confirmFinal(): Promise<BatchVerdict> {
    const look = await this.lookFn(this.rootPath, 'batch');
    if (this.watched === null || (look.ok && look.id !== this.watched.id)) return { state: 'lost' };
    if (!look.ok) return look.gone ? { state: 'lost' } : { state: 'unsure' };
    return { state: 'watched', approval: { epoch: this.epoch, id: look.id } };
  }

  /**
   * After a chunk's lstats: true when they were of the approved root (the guard did not stop
   * watching meanwhile, and the root is still that directory); false when not (the chunk is
   * dropped: the rescan on the root's return covers it); null when the look failed (the chunk
   * is handed back, and judged in a later batch).
   */
  async stillApproved(a: RootApproval): Promise<boolean | null> {
    const look = await this.lookFn(this.rootPath, 'chunk');
    // The epoch after the look: a suspension during the lstats voids them, even if the same
    // directory is back and watched again by now.
    if (!this.isCurrent(a)) return false;
    if (look.ok && look.id === a.id) return true;
    this.poke();
    return look.ok || look.gone ? false : null;
  }

  /** The guard has not stopped watching since `a` was given: what the batch hands back may be requeued. */
  isCurrent(a: RootApproval): boolean {
    return this.epoch === a.epoch && this.watched !== null && this.watched.id === a.id;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.chain.catch(() => {});
  }

  private get rootPath(): string {
    return this.mount.rootPath as string;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.serial(() => this.look('tick')).then(() => this.schedule(this.nextDelay()));
    }, ms);
    this.timer.unref?.();
  }

  private nextDelay(): number {
    return this.failures === 0 ? this.checkMs : Math.min(MAX_RETRY_MS, this.checkMs * 2 ** Math.min(this.failures, 10));
  }

  /** One look at a time (the timer's and a batch's). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => {});
    return next;
  }

  /**
   * Looks at the root and acts on a change: true when it is (still) the directory watched and
   * nothing changed; 'unsure' when the look failed but is not acted on yet; false otherwise.
   */
  private async look(why: RootLookPurpose): Promise<boolean | 'unsure'> {
    if (this.stopped) return this.watched !== null;
    const look = await this.lookFn(this.rootPath, why).catch(
      (err: Error): RootLook => ({ ok: false, gone: false, code: 'unknown', reason: `${this.rootPath}: ${err.message}` }),
    );
    if (this.watched !== null) {
      if (look.ok && look.id === this.watched.id) {
        this.bad = 0;
        await this.judgeHealth(look);
        return true;
      }
      if (!look.ok && !look.gone && ++this.bad < BAD_LOOKS_TO_ACT) {
        if (this.bad === 1) this.o.log(`watcher ${this.mount.key}: looking at the mount root failed (${look.reason}); still watching, acting after ${BAD_LOOKS_TO_ACT} failures in a row`);
        return 'unsure';
      }
      this.bad = 0;
      this.watched = null;
      this.epoch++; // before anything else: approvals given so far are void
      this.returnRescanned = false;
      this.wasGone = !look.ok ? look.gone : true; // another directory counts as gone and back at once
      await this.hooks.suspend();
      if (!look.ok) {
        this.lost = look.reason;
        this.o.log(`watcher ${this.mount.key}: the mount root is gone (${look.reason}); not watching until it returns (mount unhealthy)`);
        await this.judgeHealth(look);
        return false;
      }
      this.lost = `${look.real} was replaced by another directory`;
      this.replaced = true;
    }
    if (!look.ok) {
      if (look.gone) this.wasGone = true;
      this.replaced = false;
      this.lost = look.reason;
      await this.judgeHealth(look);
      return false;
    }
    // A readable directory, not watched: the return. Watched anew first, then rescanned (a
    // change during the rescan is seen by one or the other); rescanned even if it cannot be
    // watched yet, and once more (through the cooldown) when a later try to watch works.
    await this.judgeHealth(look);
    const urgent = this.wasGone || (this.lastId !== null && this.lastId !== look.id);
    let watching: Error | null = null;
    try {
      await this.hooks.resume();
    } catch (err) {
      watching = err as Error;
    }
    if (!this.returnRescanned) {
      this.returnRescanned = true;
      this.hooks.rescan('root back', urgent);
    } else if (watching === null) this.hooks.rescan('watched again', false); // what changed while it could not be watched
    if (watching !== null) {
      this.failures++;
      this.lost = `${look.real} is back but could not be watched: ${watching.message}`;
      if (this.failures === 1) this.o.log(`watcher ${this.mount.key}: the mount root ${look.real} is back but could not be watched: ${watching.message}; full rescan requested, trying again`);
      return false;
    }
    this.failures = 0;
    this.watched = { id: look.id };
    this.lastId = look.id;
    this.wasGone = false;
    this.lost = null;
    const replaced = this.replaced;
    this.replaced = false;
    this.o.log(
      replaced
        ? `watcher ${this.mount.key}: the mount root ${look.real} was replaced by another directory; watching that one, full rescan requested`
        : `watcher ${this.mount.key}: the mount root ${look.real} is back; watching it again, full rescan requested`,
    );
    return false;
  }

  /**
   * Decides the mount's health from a look when what the looks find changed (`known`: what the
   * catalogue says already, at start), and writes it (or the one that failed to be written before).
   */
  private async judgeHealth(look: RootLook, known?: Health): Promise<void> {
    const key = look.ok ? `ok ${look.id} ${look.unhealthy ?? ''}` : `gone ${look.reason}`;
    if (key !== this.verdictKey) {
      let next: Health | null;
      if (!look.ok) next = { state: 'unhealthy', reason: look.reason };
      else if (look.unhealthy !== null) next = { state: 'unhealthy', reason: look.unhealthy };
      else {
        // The catalogue's root: another directory is unhealthy until an audit accepts it.
        const recorded = await recordedRootIdentity(this.core.pool, this.mount.id, look.id).catch((err: Error) => {
          this.o.log(`watcher ${this.mount.key}: could not read the mount's recorded root: ${err.message}; retrying`);
          return null;
        });
        if (recorded === null) return; // decided at the next look
        next = recorded === look.id ? { state: 'healthy', reason: null } : { state: 'unhealthy', reason: anotherRootReason(this.rootPath, look.id, recorded) };
      }
      this.verdictKey = key;
      const same = (h: Health | null | undefined) => h != null && h.state === next.state && h.reason === next.reason;
      if (!same(this.health) && !same(known)) this.health = { ...next, written: false };
      else if (!same(this.health)) this.health = { ...next, written: true };
    }
    await this.writeHealth();
  }

  /** Writes the health decided last, unless written already; a failure is logged and retried at the next look. */
  private async writeHealth(): Promise<void> {
    const h = this.health;
    if (h === null || h.written) return;
    try {
      await setMountHealth(this.core.pool, this.mount.id, h.state, h.reason);
      h.written = true;
    } catch (err) {
      this.o.log(`watcher ${this.mount.key}: could not record the mount ${h.state}: ${(err as Error).message}; retrying`);
    }
  }
}
