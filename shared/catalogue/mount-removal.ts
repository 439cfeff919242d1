import type { Pool } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';
import { tryLockEntry, unlockEntry } from './locks.ts';
import { uploadOpen } from './upload-state.ts';
import type { JournalEntry } from './journal.ts';
import { getMount } from './mounts.ts';
import type { Mount } from './types.ts';

export interface RemovedMount {
  mount: Mount;
  nodes: number;
  jobs: number;
  /** Pending entries of crashed commands, recorded failed (MOUNT_NOT_FOUND): no storage is left to judge them by. */
  failedEntries: number;
}

/**
 * Removes a mount from the catalogue (DELETE /v1/mounts/:id): its nodes, snapshots, rollups and
 * reconciliation jobs go in one transaction; its journal stays (the history of what was done);
 * storage is not touched. Refused with MOUNT_BUSY (409) while a command runs on it (a live
 * process holds a pending entry's lock) or a presigned upload is open. Pending entries of
 * crashed commands are recorded failed. A command that begins once the mount is gone is
 * MOUNT_NOT_FOUND; a watcher on it closes at its agent's next mount refresh.
 */
export async function removeMount(pool: Pool, idOrKey: string): Promise<RemovedMount> {
  const mount = await getMount(pool, idOrKey);
  const client = await pool.connect();
  const locked: number[] = [];
  try {
    await client.query('BEGIN');
    try {
      await client.query('SELECT 1 FROM filestore.mounts WHERE id = $1 FOR UPDATE', [mount.id]);
      const { rows: pending } = await client.query<Pick<JournalEntry, 'id' | 'command' | 'request'>>(
        `SELECT id::int AS id, command, request FROM filestore.journal_entries WHERE mount_id = $1 AND status = 'pending' ORDER BY id`,
        [mount.id],
      );
      const busy: number[] = [];
      for (const e of pending) {
        if (uploadOpen(e)) busy.push(e.id);
        else if (await tryLockEntry(client, e.id)) locked.push(e.id);
        else busy.push(e.id);
      }
      if (busy.length > 0) {
        throw new FilestoreError(
          'MOUNT_BUSY',
          `mount "${mount.key}" has ${busy.length} command(s) running (journal entries ${busy.slice(0, 10).join(', ')}); pause it (\`filestore mounts pause ${mount.key}\`), let them finish, then remove it`,
          { mountId: mount.id, journalEntryIds: busy },
        );
      }
      const error = new FilestoreError('MOUNT_NOT_FOUND', `mount "${mount.key}" was removed while this command was pending; its storage was not judged`).toJSON();
      const { rows } = await client.query<{ nodes: number; jobs: number; failed: number }>(
        `WITH f AS (
           UPDATE filestore.journal_entries SET status = 'failed', error = $3::jsonb, finished_at = now(), recovered = true
            WHERE id = ANY($2::bigint[]) AND status = 'pending' RETURNING id
         ), n AS (DELETE FROM filestore.nodes WHERE mount_id = $1 RETURNING id),
            s AS (DELETE FROM filestore.snapshots WHERE node_id IN (SELECT id FROM n)),
            d AS (DELETE FROM filestore.rollup_deltas WHERE node_id IN (SELECT id FROM n)),
            r AS (DELETE FROM filestore.rollups WHERE mount_id = $1),
            j AS (DELETE FROM filestore.reconciliation_jobs WHERE mount_id = $1 RETURNING id)
         SELECT (SELECT count(*) FROM n)::int AS nodes, (SELECT count(*) FROM j)::int AS jobs, (SELECT count(*) FROM f)::int AS failed`,
        [mount.id, locked, JSON.stringify(error)],
      );
      await client.query('DELETE FROM filestore.mounts WHERE id = $1', [mount.id]);
      await client.query('COMMIT');
      const r = rows[0] ?? { nodes: 0, jobs: 0, failed: 0 };
      return { mount, nodes: r.nodes, jobs: r.jobs, failedEntries: r.failed };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    }
  } finally {
    for (const id of locked) await unlockEntry(client, id).catch(() => {});
    client.release();
  }
}
