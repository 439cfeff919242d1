import { lookAtRoot, sameRoot, type RootLook } from '../../shared/backends/local/root-check.ts';
import { setMountHealth } from '../../shared/catalogue/reconcile-writes.ts';
import type { Mount } from '../../shared/catalogue/types.ts';
import type { Filestore } from '../../shared/runtime.ts';

/** How often a watched mount's root is looked at, by default (one lstat and one access each time). */
export const DEFAULT_ROOT_CHECK_MS = 2_000;
// Longest wait between tries to watch a root that is back but could not be watched (ENOSPC…).
const MAX_RETRY_MS = 30_000;

/** What the mount watcher does when its root goes and comes back. */
export interface RootGuardHooks {
  /** The root is gone or is not the directory watched: stop watching it and drop what is pending (the rescan on its return covers it). */
  suspend(): Promise<void>;
  /** The root is a readable directory again: watch it anew and request a full rescan. Throws when it could not be watched (tried again later). */
  resume(): Promise<void>;
}

export interface RootGuardOptions {
  /** Between two looks at the root (default 2,000 ms). */
  checkMs?: number | undefined;
  log: (line: string) => void;
}

type Identity = { dev: number; ino: number };

/**
 * Keeps a mount watcher on its root. inotify watches an inode, not a path: a root removed and
 * made again (or renamed away and back, replaced, a disk unmounted and mounted again) leaves
 * both backends watching nothing, or the directory renamed away, while what happens in the
 * new root goes unseen. So the root is looked at every `checkMs` and before each batch is
 * judged (`lookAtRoot`: lstat, never followed, and its dev+ino compared with the one watched):
 *
 * - gone, or no longer a readable directory (a symlink, a file): watching stops, pending paths
 *   are dropped and nothing is judged — a vanished root must not read as every file deleted
 *   one by one, and nothing is marked MISSING for a disk that is merely not there; the mount is
 *   `unhealthy` with the reason; one log line;
 * - a readable directory again (the same inode or a new one): watched anew, a full rescan
 *   requested (it finds what changed meanwhile, subject to reconciliation's safety rules), the
 *   mount `healthy` again; one log line.
 *
 * Health is written on each change of state (and retried at the next look if the catalogue
 * could not be reached), not on every look.
 */
export class RootGuard {
  private readonly checkMs: number;
  /** The root being watched; null while it is not (gone, replaced by something not a directory, or not yet watched again). */
  private watched: Identity | null = null;
  /** Why the root is not watched now. */
  private lost: string | null = null;
  /** The root watched was found replaced by another directory (said so when that one is watched). */
  private replaced = false;
  private health: { state: 'healthy' | 'unhealthy'; reason: string | null; written: boolean } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private failures = 0;
  private stopped = false;

  constructor(
    private readonly fs: Filestore,
    private readonly mount: Mount,
    private readonly hooks: RootGuardHooks,
    private readonly o: RootGuardOptions,
  ) {
    this.checkMs = o.checkMs ?? DEFAULT_ROOT_CHECK_MS;
  }

  /** Why the root is not being watched right now (null while it is). */
  get problem(): string | null {
    return this.lost;
  }

  /**
   * The first look, before the backend starts (a change after it is then seen by the next
   * look). Returns what it found; a mount the catalogue holds unhealthy is marked healthy when
   * its root is fine (the mount row's state was read at start).
   */
  async begin(): Promise<RootLook> {
    const look = await lookAtRoot(this.mount.rootPath as string);
    if (look.ok) {
      this.watched = look;
      if (this.mount.health !== 'healthy') this.setHealth('healthy', null);
    } else {
      this.lost = look.reason;
      this.setHealth('unhealthy', look.reason);
    }
    await this.writeHealth();
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

  /**
   * Before a batch is judged: true when the root is still the directory watched, so the batch's
   * paths are the mount's. False when it is gone or was replaced (its paths are dropped; the
   * rescan on the root's return covers them).
   */
  confirm(): Promise<boolean> {
    return this.serial(() => this.look());
  }

  /** A look that changes nothing (the final batch at close): is the root still the one watched? */
  async unchanged(): Promise<boolean> {
    const look = await lookAtRoot(this.mount.rootPath as string);
    return look.ok && this.watched !== null && sameRoot(look, this.watched);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.chain.catch(() => {});
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.serial(() => this.look()).then(() => this.schedule(this.nextDelay()));
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

  /** Looks at the root and acts on a change; true when it is (still) the directory watched, and nothing changed. */
  private async look(): Promise<boolean> {
    if (this.stopped) return this.watched !== null;
    const look = await lookAtRoot(this.mount.rootPath as string);
    const root = look.ok ? look.real : (this.mount.rootPath as string);
    if (this.watched !== null) {
      if (look.ok && sameRoot(look, this.watched)) {
        await this.writeHealth(); // one that failed earlier
        return true;
      }
      this.watched = null;
      await this.hooks.suspend();
      if (!look.ok) {
        this.lost = look.reason;
        this.o.log(`watcher ${this.mount.key}: the mount root is gone (${look.reason}); not watching until it returns (mount unhealthy)`);
        this.setHealth('unhealthy', look.reason);
        await this.writeHealth();
        return false;
      }
      this.lost = `${root} was replaced by another directory`;
      this.replaced = true;
    }
    if (!look.ok) {
      if (look.reason !== this.lost) this.setHealth('unhealthy', look.reason); // e.g. gone, then a symlink put there
      this.lost = look.reason;
      this.replaced = false;
      await this.writeHealth();
      return false;
    }
    // The root is a readable directory: healthy for reconciliation, whether or not it can be watched yet.
    if (this.health?.state !== 'healthy') this.setHealth('healthy', null);
    await this.writeHealth();
    try {
      await this.hooks.resume();
    } catch (err) {
      this.failures++;
      this.lost = `${root} is back but could not be watched: ${(err as Error).message}`;
      if (this.failures === 1) this.o.log(`watcher ${this.mount.key}: the mount root ${root} is back but could not be watched: ${(err as Error).message}; trying again`);
      return false;
    }
    this.failures = 0;
    this.watched = look;
    this.lost = null;
    const replaced = this.replaced;
    this.replaced = false;
    this.o.log(
      replaced
        ? `watcher ${this.mount.key}: the mount root ${root} was replaced by another directory; watching that one, full rescan requested`
        : `watcher ${this.mount.key}: the mount root ${root} is back; watching it again, full rescan requested (mount healthy)`,
    );
    return false;
  }

  private setHealth(state: 'healthy' | 'unhealthy', reason: string | null): void {
    this.health = { state, reason, written: false };
  }

  /** Writes the health decided last, unless written already; a failure is logged and retried at the next look. */
  private async writeHealth(): Promise<void> {
    const h = this.health;
    if (h === null || h.written) return;
    try {
      await setMountHealth(this.fs.pool, this.mount.id, h.state, h.reason);
      h.written = true;
    } catch (err) {
      this.o.log(`watcher ${this.mount.key}: could not record the mount ${h.state}: ${(err as Error).message}; retrying`);
    }
  }
}
