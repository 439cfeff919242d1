/**
 * Part 1 of the audit bench: full audits of a local tree of small files — the discovery that
 * builds the catalogue, then unchanged rounds and 1 %-drift rounds — each round alternating
 * our audit with `rclone lsjson -R` and `find -printf` on the same tree.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createMount } from '../../shared/catalogue/mounts.ts';
import type { ReconcileCounts } from '../../shared/reconcile/types.ts';
import type { Filestore } from '../../shared/runtime.ts';
import { runAudit, vacuumCatalogue, type AuditResult } from './audit-job.ts';
import type { SqlTrace, StatementTally } from './sql-trace.ts';
import { captureCommand, countLsjson, findPrintf, rcloneLsjson, timeCommand, type PeerRun } from './audit-peers.ts';
import { applyDrift, createSmallFileTree, type Drift, type TreeShape } from './audit-trees.ts';
import { syncAll } from './big-write.ts';
import { alternateRounds } from './rounds.ts';

export interface BenchContext {
  core: Filestore;
  trace: SqlTrace;
  tempDir: string;
  rounds: number;
  progress(line: string): void;
  /** Every mount the bench created, for the cleanup. */
  mounts: string[];
  /** Problems that make a figure meaningless (wrong counts, a peer that listed too little). */
  invalid: string[];
}

export interface OurAudit extends AuditResult {
  sql: StatementTally[];
  /** The relay publishing the audit's events afterwards (not part of `ms`). */
  drainMs: number;
}

export interface LocalResult {
  shape: TreeShape;
  files: number;
  bytes: number;
  createMs: number;
  initial: OurAudit;
  unchanged: { ours: OurAudit[]; rclone: PeerRun[]; find: PeerRun[] };
  drift: { ours: OurAudit[]; rclone: PeerRun[]; find: PeerRun[]; drifts: Drift[] };
}

/** Runs one audit of `mountId` in this process with the SQL tally and the relay drain; checks the counts. */
export async function ourAudit(ctx: BenchContext, mountId: string, what: string, expected: Partial<ReconcileCounts>): Promise<OurAudit> {
  // Autovacuum is off on the development server: each audit starts from vacuumed tables, as
  // it would where autovacuum keeps up (untimed).
  await vacuumCatalogue(ctx.core.pool);
  ctx.trace.reset();
  const result = await runAudit(ctx.core, mountId);
  const sql = ctx.trace.tally();
  const t0 = performance.now();
  await ctx.core.relay?.drain();
  const drainMs = performance.now() - t0;
  const wrong = Object.entries(expected).filter(([k, v]) => result.counts[k as keyof ReconcileCounts] !== v);
  if (wrong.length > 0) {
    ctx.invalid.push(`${what}: counts ${JSON.stringify(result.counts)}, expected ${JSON.stringify(expected)}`);
  }
  return { ...result, sql, drainMs };
}

export async function localAuditPart(ctx: BenchContext, shape: TreeShape): Promise<LocalResult> {
  const root = join(ctx.tempDir, 'local-tree');
  const files = shape.dirs * shape.filesPerDir;
  ctx.progress(`creating ${files} files of 100 B – 4 KB in ${shape.dirs} directories…`);
  const t0 = performance.now();
  const tree = await createSmallFileTree(root, shape);
  await syncAll();
  const createMs = performance.now() - t0;

  const mount = await createMount(ctx.core.pool, { key: `bench-audit-${randomUUID().slice(0, 8)}`, kind: 'local', rootPath: root });
  ctx.mounts.push(mount.id);
  const entries = files + shape.dirs;
  ctx.progress(`initial audit of the untracked tree (discovers ${entries} nodes)…`);
  const initial = await ourAudit(ctx, mount.id, 'local initial audit', { discovered: entries, checked: entries + 1, missing: 0, updated: 0 });

  const rclone = rcloneLsjson(root);
  const find = findPrintf(root);
  await checkPeers(ctx, rclone, find, () => ({ files: tree.files.length, dirs: shape.dirs }));

  ctx.progress(`${ctx.rounds} rounds on the unchanged tree: our audit, rclone, find (alternating)…`);
  const unchanged = await alternateRounds<OurAudit | PeerRun>(
    ctx.rounds,
    [
      { name: 'ours', run: () => ourAudit(ctx, mount.id, 'local unchanged audit', { unchanged: entries + 1, updated: 0, discovered: 0, missing: 0 }) },
      { name: 'rclone', run: () => timeCommand(rclone) },
      { name: 'find', run: () => timeCommand(find) },
    ],
    { progress: ctx.progress },
  );

  // Each drift round changes 1 % of the files each way, afresh; the tree keeps its size (as many
  // added as deleted) and the catalogue keeps the deleted ones as MISSING rows.
  const drifts: Drift[] = [];
  let missingSoFar = 0;
  ctx.progress(`${ctx.rounds} rounds with a fresh 1 % drift each (modified, added, deleted out of band)…`);
  const drift = await alternateRounds<OurAudit | PeerRun>(
    ctx.rounds,
    [
      {
        name: 'ours',
        run: async (r) => {
          const d = drifts[r] as Drift;
          const result = await ourAudit(ctx, mount.id, `local 1 % drift audit, round ${r + 1}`, {
            updated: d.modified,
            discovered: d.added,
            missing: d.deleted,
          });
          missingSoFar += d.deleted;
          return result;
        },
      },
      { name: 'rclone', run: () => timeCommand(rclone) },
      { name: 'find', run: () => timeCommand(find) },
    ],
    {
      progress: ctx.progress,
      setup: async (r) => {
        drifts[r] = await applyDrift(tree, r);
        await syncAll(); // the drift's writeback is not part of anyone's measurement
      },
    },
  );
  if (missingSoFar === 0) ctx.invalid.push('local drift: no deletions were applied');
  await checkPeers(ctx, rclone, find, () => ({ files: tree.files.length, dirs: shape.dirs }));

  return {
    shape,
    files,
    bytes: tree.bytes,
    createMs,
    initial,
    unchanged: { ours: unchanged.get('ours') as OurAudit[], rclone: unchanged.get('rclone') as PeerRun[], find: unchanged.get('find') as PeerRun[] },
    drift: { ours: drift.get('ours') as OurAudit[], rclone: drift.get('rclone') as PeerRun[], find: drift.get('find') as PeerRun[], drifts },
  };
}

/** The peers must list the whole tree (a peer that fails fast would look very good). */
async function checkPeers(
  ctx: BenchContext,
  rclone: ReturnType<typeof rcloneLsjson>,
  find: ReturnType<typeof findPrintf>,
  expected: () => { files: number; dirs: number },
): Promise<void> {
  const want = expected();
  const listed = countLsjson(await captureCommand(rclone));
  if (listed.files !== want.files || listed.dirs !== want.dirs) {
    ctx.invalid.push(`rclone listed ${listed.files} files and ${listed.dirs} directories, the tree has ${want.files} and ${want.dirs}`);
  }
  const lines = (await captureCommand(find)).split('\n').filter((l) => l !== '').length;
  if (lines !== want.files + want.dirs + 1) ctx.invalid.push(`find printed ${lines} lines, the tree has ${want.files + want.dirs + 1} entries`);
}
