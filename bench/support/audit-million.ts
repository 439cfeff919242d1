/**
 * Part 2 of the audit bench: peak RSS of full audits of a lean 1M-file local tree, each audit
 * in a child process of its own (createFilestore, the handler, close), so the figure is what a
 * worker doing only that audit holds. Next to it, `rclone lsjson -R` and `find` on the same tree
 * under GNU time (their peak RSS and wall time).
 *
 * The catalogue of the tree comes from a discovery audit (mode "discover"), or — the default,
 * as a 1M discovery takes longer than the rest of the bench — from `seedCatalogue`: the rows
 * discovery writes (insertNodes of the backend's own listing, snapshots and rollups
 * included), without its per-batch guards and events.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createMount } from '../../shared/catalogue/mounts.ts';
import { insertNodes, newNodeFromStat, type NewNode } from '../../shared/catalogue/node-writes.ts';
import { recomputeRollups } from '../../shared/catalogue/rollups.ts';
import type { Mount } from '../../shared/catalogue/types.ts';
import { inTransaction, type Pool } from '../../shared/db/pool.ts';
import { createFilestore } from '../../shared/runtime.ts';
import { startAutoanalyze, vacuumCatalogue, type ChildAuditResult, type ChildConfig } from './audit-job.ts';
import { spawnAudit } from './audit-spawn.ts';
import { findPrintf, rcloneLsjson, timeCommand, type PeerRun } from './audit-peers.ts';
import { createLeanTree, type TreeShape } from './audit-trees.ts';
import { syncAll } from './big-write.ts';

export type MillionMode = 'seed' | 'discover';

export interface MillionResult {
  mode: MillionMode;
  shape: TreeShape;
  files: number;
  createMs: number;
  /** The discovery audit (mode "discover"). */
  initial: ChildAuditResult | null;
  /** How long seeding the catalogue took (mode "seed"). */
  seedMs: number | null;
  unchanged: ChildAuditResult;
  /** VACUUM (ANALYZE) after the discovery, before the unchanged audit (untimed there). */
  vacuumMs: number;
  rclone: PeerRun;
  find: PeerRun;
}

export interface MillionContext {
  pool: Pool;
  config: ChildConfig;
  tempDir: string;
  progress(line: string): void;
  mounts: string[];
  invalid: string[];
}

export async function millionAuditPart(ctx: MillionContext, shape: TreeShape, mode: MillionMode): Promise<MillionResult> {
  const root = join(ctx.tempDir, 'million-tree');
  const files = shape.dirs * shape.filesPerDir;
  ctx.progress(`creating ${files} empty files in ${shape.dirs} directories (xargs touch)…`);
  const t0 = performance.now();
  await createLeanTree(root, shape);
  await syncAll();
  const createMs = performance.now() - t0;
  ctx.progress(`created in ${(createMs / 1000).toFixed(1)} s`);

  const mount = await createMount(ctx.pool, { key: `bench-audit-1m-${randomUUID().slice(0, 8)}`, kind: 'local', rootPath: root });
  ctx.mounts.push(mount.id);
  const entries = files + shape.dirs;

  await vacuumCatalogue(ctx.pool);
  let initial: ChildAuditResult | null = null;
  let seedMs: number | null = null;
  if (mode === 'discover') {
    ctx.progress(`initial audit of the untracked 1M tree in a child process (discovers ${entries} nodes)…`);
    initial = await spawnAudit(mount.id, ctx.config);
    if (initial.counts.discovered !== entries) ctx.invalid.push(`1M initial audit: discovered ${initial.counts.discovered}, expected ${entries}`);
    ctx.progress(`discovered in ${(initial.ms / 1000).toFixed(1)} s; VACUUM (ANALYZE)…`);
  } else {
    ctx.progress(`seeding the catalogue of the 1M tree (insertNodes of the listing, ${SEED_BATCH} rows per transaction)…`);
    const t1 = performance.now();
    const autoanalyze = startAutoanalyze(ctx.pool);
    const seeded = await seedCatalogue(ctx.config, mount, ctx.pool).finally(() => autoanalyze.stop());
    seedMs = performance.now() - t1;
    if (seeded !== entries) ctx.invalid.push(`1M seed: ${seeded} rows, expected ${entries}`);
    ctx.progress(`seeded ${seeded} rows in ${(seedMs / 1000).toFixed(1)} s; VACUUM (ANALYZE)…`);
  }

  const vacuumMs = await vacuumCatalogue(ctx.pool);
  ctx.progress('unchanged audit of the 1M tree in a child process…');
  const unchanged = await spawnAudit(mount.id, ctx.config);
  const c = unchanged.counts;
  if (c.updated + c.discovered + c.missing !== 0 || c.unchanged !== entries + 1) {
    ctx.invalid.push(`1M unchanged audit: counts ${JSON.stringify(c)}, expected ${entries + 1} unchanged`);
  }

  ctx.progress('rclone lsjson -R and find on the 1M tree, under GNU time…');
  const scratchFile = join(ctx.tempDir, 'time-rss.txt');
  const rclone = await timeCommand(rcloneLsjson(root), { withRss: true, scratchFile });
  const find = await timeCommand(findPrintf(root), { withRss: true, scratchFile });
  return { mode, shape, files, createMs, initial, seedMs, unchanged, vacuumMs, rclone, find };
}

const SEED_BATCH = 5_000;

/**
 * Writes the rows a discovery audit of `mount` would write — one node (and its snapshot) per
 * entry of the backend's listing, rollups recomputed once at the end — in transactions of
 * SEED_BATCH rows. Returns the number of nodes inserted.
 */
async function seedCatalogue(config: ChildConfig, mount: Mount, pool: Pool): Promise<number> {
  const core = await createFilestore({ ...config, migrate: false, relay: false, recover: false, maintenanceIntervalMs: 3_600_000 });
  let inserted = 0;
  try {
    let batch: NewNode[] = [];
    const write = async () => {
      const client = await pool.connect();
      try {
        inserted += (await inTransaction(client, () => insertNodes(client, mount.id, batch, { reconciliationJobId: null }))).length;
      } finally {
        client.release();
      }
      batch = [];
    };
    for await (const entry of core.backends.forMount(mount).list('', { recursive: true })) {
      batch.push(newNodeFromStat(entry));
      if (batch.length >= SEED_BATCH) await write();
    }
    if (batch.length > 0) await write();
    await recomputeRollups(pool, mount.id, '');
  } finally {
    await core.close();
  }
  return inserted;
}
