import type { BackendRegistry } from '../backends/registry.ts';
import { finishedEntryIds } from '../catalogue/journal.ts';
import { listMounts } from '../catalogue/mounts.ts';
import type { Pool } from '../db/pool.ts';

/**
 * The staging sweep of S3 mounts, one bounded step per maintenance pass: staging objects named
 * after a finished journal entry (`j<id>.<anything>`) are garbage and go. What it catches: bytes
 * PUT to a presigned upload URL after the upload completed, failed or was cancelled (the URL
 * stays valid for its whole life, and a PUT begun before the expiry may end much later), and
 * clean-ups that failed or were never reached (a process gone between its commit and its
 * clean-up). Objects of pending entries stay; names no entry could own are left alone, as the
 * local sweep (staging-sweep.ts) leaves them. A mount whose storage does not answer is skipped
 * with a log line, not a failed pass: this is garbage collection, and the mount's own commands
 * report its storage; each request is tried twice at most, so a dead endpoint costs little.
 */

/** Staging keys listed per mount per pass: one ListObjectsV2 page. */
export const SWEEP_KEYS_PER_MOUNT = 1000;

export interface UploadSweepReport {
  removed: number;
  /** Deletions that failed (tried again next pass). */
  failed: number;
  /** Mounts whose staging could not be listed, with why. */
  skipped: string[];
}

export class UploadStagingSweep {
  /** Per mount, the key after which the next pass lists (a large staging area is covered over passes). */
  private readonly cursor = new Map<string, string>();

  constructor(
    private readonly pool: Pool,
    private readonly backends: BackendRegistry,
    private readonly keysPerMount = SWEEP_KEYS_PER_MOUNT,
  ) {}

  async pass(): Promise<UploadSweepReport> {
    const report: UploadSweepReport = { removed: 0, failed: 0, skipped: [] };
    for (const mount of await listMounts(this.pool)) {
      if (mount.kind !== 's3') continue;
      try {
        const { directTransfers } = await import('../backends/s3/direct.ts');
        const direct = directTransfers(mount, this.backends.s3Defaults, 2);
        const { keys, next } = await direct.stagingKeys(this.keysPerMount, this.cursor.get(mount.id));
        if (next === undefined) this.cursor.delete(mount.id);
        else this.cursor.set(mount.id, next);
        if (keys.length === 0) continue;
        const finished = await finishedEntryIds(this.pool, mount.id, [...new Set(keys.map((k) => k.entryId))]);
        for (const k of keys) {
          if (!finished.has(k.entryId)) continue;
          await direct.delete(k.key).then(
            () => (report.removed += 1),
            () => (report.failed += 1),
          );
        }
      } catch (err) {
        report.skipped.push(`mount ${mount.key}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return report;
  }
}
