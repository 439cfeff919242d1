/**
 * Setting up and tearing down what the drift bench uses: the Redis database it runs its queues
 * on (checked to be its own), the local trees of its mounts, the wait for an agent's catch-up
 * rescan to settle, and the removal of its mounts, agent rows, queues and cache keys.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import pg from 'pg';
import { deleteMount } from '../../shared/catalogue/mounts.ts';
import { commandQueueName } from '../../shared/dispatch/messages.ts';
import type { Pool } from '../../shared/db/pool.ts';
import { catalogueQueuePrefix } from '../../shared/queues/prefix.ts';
import { RECONCILE_QUEUE } from '../../shared/reconcile/queue.ts';
import { BURST_DIR, burstDirName } from './drift-burst.ts';
import { fmt, runConcurrent } from './measure.ts';

export const LATENCY_DIR = 'lat';
export const latencyPath = (i: number): string => `${LATENCY_DIR}/f-${String(i).padStart(5, '0')}.dat`;
const LATENCY_FILE_BYTES = 1000;

/**
 * Refuses a Redis database that another process is connected to. BullMQ job ids are the
 * catalogue's row ids (`job-<id>`): on a database shared with another catalogue (the tests',
 * another bench's), an id that exists there already is taken for a duplicate and silently not
 * queued, and another catalogue's reconcile worker would take our jobs.
 */
export async function checkRedisIsOurs(redisUrl: string): Promise<void> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2 });
  try {
    const db = Number(new URL(redisUrl).pathname.slice(1) || '0');
    const myId = Number(await redis.client('ID'));
    const others = String(await redis.client('LIST'))
      .split('\n')
      .filter((l) => l.includes(` db=${db} `) && !l.startsWith(`id=${myId} `));
    if (others.length > 0) {
      throw new Error(
        `Redis database ${db} of ${redisUrl} is in use by ${others.length} other connection(s) (e.g. ${others[0]?.slice(0, 160)}); ` +
          'the drift bench needs a Redis database of its own for its queues: set BENCH_DRIFT_REDIS_URL=redis://127.0.0.1:6379/<a free database number>',
      );
    }
  } finally {
    redis.disconnect();
  }
}

/** The tree of the latency and burst mount: `files` files of 1,000 B under lat/, and the burst's empty directories. */
export async function createDriftTree(root: string, files: number, burstDirs: number): Promise<void> {
  await mkdir(join(root, LATENCY_DIR), { recursive: true });
  for (let d = 0; d < burstDirs; d++) await mkdir(join(root, BURST_DIR, burstDirName(d)), { recursive: true });
  const block = Buffer.alloc(LATENCY_FILE_BYTES, 0x61);
  await runConcurrent(files, 32, async (i) => {
    await writeFile(join(root, latencyPath(i)), block);
  });
}

/** Makes `dirs` traversable by another user (mkdtemp creates 0700 directories). */
export async function openUp(dirs: string[]): Promise<void> {
  for (const d of dirs) await chmod(d, 0o755);
}

/**
 * Waits until the agent's catch-up rescan of `mountId` is over and its events are out: no job
 * of the mount queued or running, nothing unpublished in its outbox, and the latency files all
 * catalogued ACTIVE. Returns the wait in ms.
 */
export async function waitForQuiet(pool: Pool, mountId: string, latencyFiles: number, timeoutMs = 300_000): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const { rows } = await pool.query<{ open: number; unpublished: number; files: number }>(
      `SELECT (SELECT count(*)::int FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND status IN ('queued', 'running')) AS open,
              (SELECT count(*)::int FROM filestore.outbox WHERE mount_id = $1 AND published_at IS NULL) AS unpublished,
              (SELECT count(*)::int FROM filestore.nodes
                WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'file' AND consistency_state = 'ACTIVE' AND path >= $2 AND path < $3) AS files`,
      [mountId, `${LATENCY_DIR}/`, `${LATENCY_DIR}0`],
    );
    const r = rows[0];
    if (r && r.open === 0 && r.unpublished === 0 && r.files === latencyFiles) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(`the catalogue did not settle within ${timeoutMs / 1000} s: ${JSON.stringify(r)} (expected ${latencyFiles} files ACTIVE)`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Removes the bench's mounts (rows of every table), agent rows, queues and cache keys; vacuums what they left. */
export async function cleanUp(
  o: { databaseUrl: string; redisUrl: string; mountIds: string[]; agentIds: string[] },
  log: (line: string) => void,
): Promise<void> {
  const redis = new Redis(o.redisUrl, { maxRetriesPerRequest: null });
  try {
    // The catalogue's queues live under its own prefix (shared/queues/prefix.ts).
    const db = new pg.Client({ connectionString: o.databaseUrl });
    await db.connect();
    const prefix = await catalogueQueuePrefix(db).finally(() => db.end());
    // The shared queue, and every queue named after one of our agents (its command queue, its
    // reconcile queue filestore-reconcile-<agentId>, whatever else is keyed by it).
    const names = new Set([RECONCILE_QUEUE, ...o.agentIds.map((a) => commandQueueName(a))]);
    for (const agentId of o.agentIds) {
      for await (const batch of redis.scanStream({ match: `${prefix}:*${agentId}*:meta`, count: 1000 })) {
        for (const key of batch as string[]) names.add(key.slice(`${prefix}:`.length, -':meta'.length));
      }
    }
    for (const name of names) {
      const queue = new Queue(name, { connection: redis, prefix });
      await queue.obliterate({ force: true }).catch((e: Error) => log(`cleanup: queue ${name}: ${e.message}`));
      await queue.close();
    }
    for (const id of o.mountIds) {
      const keys: string[] = [];
      for await (const batch of redis.scanStream({ match: `filestore:cache:${id}:*`, count: 1000 })) keys.push(...(batch as string[]));
      if (keys.length > 0) await redis.del(...keys);
    }
  } catch (err) {
    log(`cleanup: Redis: ${(err as Error).message}`);
  } finally {
    redis.disconnect();
  }
  const client = new pg.Client({ connectionString: o.databaseUrl });
  await client.connect();
  try {
    for (const id of o.mountIds) {
      const t0 = performance.now();
      try {
        const { nodes } = await deleteMount(client, id);
        log(`Cleanup: deleted bench mount ${id} (${nodes} nodes) in ${fmt((performance.now() - t0) / 1000, 1)} s.`);
      } catch (err) {
        log(`cleanup: could not delete mount ${id}: ${(err as Error).message}`);
      }
    }
    if (o.agentIds.length > 0) await client.query('DELETE FROM filestore.agents WHERE id = ANY($1::text[])', [o.agentIds]);
    await client.query('VACUUM (ANALYZE) filestore.nodes, filestore.snapshots, filestore.rollups, filestore.rollup_deltas, filestore.outbox, filestore.reconciliation_jobs');
  } finally {
    await client.end();
  }
}
