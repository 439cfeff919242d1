import { anotherRootReason } from '../backends/local/root-check.ts';
import { setMountHealth } from '../catalogue/reconcile-writes.ts';
import { acceptRootIdentity, recordedRootIdentity } from '../catalogue/root-identity.ts';
import type { Mount } from '../catalogue/types.ts';
import type { Pool } from '../db/pool.ts';
import { MountUnhealthyError, RootReplacedError } from './errors.ts';
import type { ReconcileStrategy } from './strategy.ts';

/**
 * The root one reconciliation runs against, and the mount's health as it finds it.
 *
 * A local root can be a readable directory and still not be the mount: the empty mount point
 * left where a disk was unmounted reads as every file deleted. So the root's identity
 * (device:inode) is compared with the one the catalogue was audited against
 * (shared/catalogue/root-identity.ts): a directory job finding another directory refuses
 * (RootReplacedError, the mount unhealthy, nothing marked); a full audit goes on under the
 * mass-missing rule and, once complete, accepts it. Just before anything is marked MISSING the
 * root is looked at again (one lstat and an access check): replaced since the run began, the
 * run refuses too. S3 buckets have no identity (checkRoot returns null): nothing to compare.
 */
export class RunRoot {
  /** The identity the run began with (null: none, S3). */
  private id: string | null = null;
  /** An audit of a root that is not the recorded one: what it would accept. */
  private accepting: { id: string; recorded: string } | null = null;

  constructor(
    private readonly pool: Pool,
    private readonly mount: Mount,
    private readonly strategy: ReconcileStrategy,
    private readonly isAudit: boolean,
  ) {}

  /** Before the walk: the root is readable and the mount's; the mount is recorded healthy (not while an audit may accept another root). */
  async begin(): Promise<void> {
    if (await this.checked()) await setMountHealth(this.pool, this.mount.id, 'healthy', null);
  }

  /**
   * `begin` without its write of the mount's health: true when the caller is to record it
   * healthy (setMountHealthSql), in a transaction of its own that commits only after this
   * resolved. Unhealthy is still recorded here, on the pool, as `begin` does.
   */
  async checked(): Promise<boolean> {
    await this.unhealthyOn(async () => {
      const id = await this.strategy.checkRoot();
      if (id !== null) {
        const recorded = await recordedRootIdentity(this.pool, this.mount.id, id);
        if (recorded !== id) {
          if (!this.isAudit) throw new RootReplacedError(anotherRootReason(this.root, id, recorded));
          this.accepting = { id, recorded };
        }
      }
      this.id = id;
    });
    return this.accepting === null;
  }

  /** Just before nodes are marked MISSING: still the directory the run began with. */
  async beforeMissing(): Promise<void> {
    if (this.id === null) return;
    await this.unhealthyOn(async () => {
      const now = await this.strategy.checkRoot();
      if (now !== this.id) {
        throw new RootReplacedError(`${this.root} was replaced by another directory while it was reconciled (device:inode ${String(now)}, was ${String(this.id)})`);
      }
    });
  }

  /** A complete audit: the root it walked is the mount's from now on. */
  async completed(): Promise<void> {
    if (this.accepting === null) return;
    await acceptRootIdentity(this.pool, this.mount.id, this.accepting.id);
    await setMountHealth(this.pool, this.mount.id, 'healthy', null);
  }

  /** An audit of another root stopped (the mass-missing rule): the mount is unhealthy, saying both. */
  async refused(err: Error): Promise<void> {
    if (this.accepting === null) return;
    const reason = `${anotherRootReason(this.root, this.accepting.id, this.accepting.recorded)}; ${err.message}`;
    await setMountHealth(this.pool, this.mount.id, 'unhealthy', reason);
  }

  private get root(): string {
    return this.mount.rootPath ?? '';
  }

  private async unhealthyOn(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (err instanceof MountUnhealthyError) await setMountHealth(this.pool, this.mount.id, 'unhealthy', String(err.details?.reason ?? err.message));
      throw err;
    }
  }
}
