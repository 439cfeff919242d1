import { LocalExecutor } from '../backends/local/local-executor.ts';
import { finishedEntryIds } from '../catalogue/journal.ts';
import { setMountHealth } from '../catalogue/reconcile-writes.ts';
import type { Mount } from '../catalogue/types.ts';
import type { Pool } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';

/**
 * The staging sweep of a local mount, run by the process that executes the mount's commands
 * when it starts: what finished commands left in the staging area (a clean-up that failed, a
 * process killed between its commit and its clean-up) goes; what pending commands staged stays,
 * for the command itself or for recovery once its owner is gone (never judged by age: a live
 * copy may be hours old). A staging directory that is not a plain directory of the mount (a
 * symlink planted there) makes the mount unhealthy and nothing is touched through it.
 */
export async function sweepStaging(pool: Pool, mount: Mount, log: (line: string) => void): Promise<void> {
  try {
    const executor = new LocalExecutor({ rootPath: mount.rootPath as string });
    const sweep = await executor.discardLeftovers((ids) => finishedEntryIds(pool, mount.id, ids));
    if (sweep.removed > 0) log(`mount ${mount.key}: removed ${sweep.removed} leftover(s) of finished commands from the staging area`);
    if (sweep.pending > 0) log(`mount ${mount.key}: kept ${sweep.pending} staging entr(ies) of commands still pending (running, or awaiting recovery)`);
    if (sweep.unattributed.length > 0) {
      const sample = sweep.unattributed.slice(0, 3).join(', ') + (sweep.unattributed.length > 3 ? ', …' : '');
      log(
        `mount ${mount.key}: the staging area holds ${sweep.unattributed.length} entr(ies) no journal entry names (${sample}); ` +
          'left alone: remove them by hand once no older Filestore version runs on this mount',
      );
    }
  } catch (err) {
    const message = err instanceof FilestoreError ? err.message : String(err);
    log(`mount ${mount.key}: staging area: ${message}`);
    if (err instanceof FilestoreError && err.details?.staging === true) await setMountHealth(pool, mount.id, 'unhealthy', message).catch(() => {});
  }
}
