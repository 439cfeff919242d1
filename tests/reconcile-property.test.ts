import path from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deleteMount } from '../shared/catalogue/mounts.ts';
import { parentOf } from '../shared/paths.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import type { ReconcileCounts } from '../shared/reconcile/types.ts';
import type { Filestore } from '../shared/runtime.ts';
import { expectExactRollups } from './support/assertions.ts';
import { createTestMount, startFilestore } from './support/filestore.ts';
import { applyCommand, commandArb, consistentSeeds, seedArb, sha256Of, walkDisk, type Applied, type DiskEntry } from './support/out-of-band.ts';

/**
 * Issue 4: whatever happens to a local tree behind Filestore's back, one audit makes the
 * catalogue equal the disk. Each case writes a tree through Filestore, changes it directly
 * on disk (create, modify, delete, rename, file↔directory, symlinks), audits, and compares.
 * FILESTORE_PROPERTY_RUNS sets the number of cases, FILESTORE_PROPERTY_SEED replays a run.
 */
const RUNS = Number(process.env.FILESTORE_PROPERTY_RUNS ?? 300);
const SEED = process.env.FILESTORE_PROPERTY_SEED;

interface Row {
  id: string;
  path: string;
  kind: string;
  size: number;
  sha256: string | null;
  state: string;
  parentId: string | null;
  target: string | null;
}

const describeEntry = (e: { path: string; kind: string; size: number; target: string | null }) =>
  `${e.kind} ${JSON.stringify(e.path)}${e.kind === 'file' ? ` ${e.size}B` : ''}${e.kind === 'symlink' ? ` -> ${JSON.stringify(e.target)}` : ''}`;
const ofDisk = (e: DiskEntry) => describeEntry({ ...e, target: e.symlinkTarget });

describe('reconciliation of random out-of-band changes (local, property-based)', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startFilestore();
  });
  afterAll(() => core.close());

  /** A full audit (path "", recursive) run by the engine as a job would; force: the mass-missing rule is tested elsewhere. */
  async function audit(mountId: string, hash: boolean): Promise<ReconcileCounts> {
    const { rows } = await core.pool.query(
      `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status) VALUES ($1, '', 'audit', $2, 'running')
       RETURNING id, mount_id AS "mountId", path, reason, options, status, attempts, coalesced, result, error,
                 created_at AS "createdAt", started_at AS "startedAt", finished_at AS "finishedAt", updated_at AS "updatedAt"`,
      [mountId, JSON.stringify({ recursive: true, hash, force: true })],
    );
    return createReconciler(core)(rows[0], async () => {});
  }

  async function liveRows(mountId: string): Promise<Row[]> {
    const { rows } = await core.pool.query<Row>(
      `SELECT id::text AS id, path, kind, size_bytes::float8 AS size, sha256, consistency_state AS state,
              parent_id::text AS "parentId", metadata->>'symlinkTarget' AS target
         FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL`,
      [mountId],
    );
    return rows;
  }

  /** Every way the catalogue can disagree with the disk, in words (empty when they agree). */
  async function disagreements(mountId: string, root: string, hashed: boolean): Promise<string[]> {
    const problems: string[] = [];
    const disk = await walkDisk(root);
    const onDisk = new Map(disk.map((e) => [e.path, e]));
    const rows = await liveRows(mountId);
    const byPath = new Map(rows.map((r) => [r.path, r]));

    // 1. The live, not-MISSING nodes are exactly the entries on disk (path, kind, size, symlink target).
    const catalogued = new Set(rows.filter((r) => r.state !== 'MISSING').map(describeEntry));
    const actual = new Set(disk.map(ofDisk));
    for (const d of actual) if (!catalogued.has(d)) problems.push(`on disk but not catalogued (or catalogued differently): ${d}`);
    for (const c of catalogued) if (!actual.has(c)) problems.push(`catalogued but not on disk as such: ${c}`);
    if (hashed) {
      for (const e of disk.filter((d) => d.kind === 'file')) {
        const recorded = byPath.get(e.path)?.sha256 ?? null;
        const truth = await sha256Of(path.join(root, e.path));
        if (recorded !== truth) problems.push(`sha256 of ${JSON.stringify(e.path)}: recorded ${recorded}, disk ${truth}`);
      }
    }
    // 2. States: what is on disk is ACTIVE, what is not is MISSING.
    for (const r of rows) {
      const want = onDisk.has(r.path) ? 'ACTIVE' : 'MISSING';
      if (r.state !== want) problems.push(`${r.kind} ${JSON.stringify(r.path)} is ${r.state}, expected ${want}`);
    }
    // 3. Each live node hangs from the live node at its parent path.
    for (const r of rows) {
      const parent = parentOf(r.path);
      const want = parent === null ? null : (byPath.get(parent)?.id ?? `<no live node at ${JSON.stringify(parent)}>`);
      if (r.parentId !== want) problems.push(`parent_id of ${JSON.stringify(r.path)} is ${r.parentId}, expected ${want}`);
    }
    // 4. Rollups recomputed from the rows.
    await expectExactRollups(core, mountId).catch((err: Error & { actual?: unknown; expected?: unknown }) =>
      problems.push(`rollup (row + deltas) ${JSON.stringify(err.actual)}, recomputed from the rows ${JSON.stringify(err.expected)}`),
    );
    return problems;
  }

  it('after any sequence of out-of-band changes, an audit makes the catalogue equal the disk, and a second audit changes nothing', async () => {
    const property = fc.asyncProperty(
      fc.array(seedArb, { maxLength: 8 }),
      fc.array(commandArb, { minLength: 1, maxLength: 15 }),
      fc.option(fc.nat({ max: 14 }), { nil: null }),
      fc.boolean(),
      async (seeds, commands, auditAfter, hashing) => {
        const t = await createTestMount(core, 'local');
        const m = t.mount.id;
        const root = t.root as string;
        const applied: Applied = { trace: [], needsHash: false };
        try {
          for (const s of consistentSeeds(seeds)) {
            if (s.kind === 'file') await core.orchestrator.writeFile(m, { path: s.path }, Readable.from([Buffer.from(s.content)]));
            else await core.orchestrator.mkdir(m, { path: s.path, parents: true });
            applied.trace.push(`through Filestore: ${s.kind === 'file' ? `write ${JSON.stringify(s.path)} = ${JSON.stringify(s.content)}` : `mkdir ${JSON.stringify(s.path)}`}`);
          }
          for (const [i, c] of commands.entries()) {
            await applyCommand(root, c, applied);
            // An earlier audit in the middle: later changes then start from MISSING nodes, symlinks, discovered nodes.
            if (i === auditAfter && i < commands.length - 1) {
              await audit(m, hashing);
              applied.trace.push(`audit (hash: ${hashing})`);
            }
          }
          // A same-size change with the mtime put back is visible only to a hashing audit.
          const hash = hashing || applied.needsHash;
          const problems: string[] = [];
          const first = await audit(m, hash);
          problems.push(...(await disagreements(m, root, hash)));
          const second = await audit(m, hash);
          if (second.updated !== 0 || second.discovered !== 0 || second.missing !== 0) {
            problems.push(`second audit was not a no-op: ${JSON.stringify(second)}`);
          }
          if (problems.length > 0) {
            throw new Error(`after the audit (hash: ${hash}, counts ${JSON.stringify(first)}):\n  ${problems.join('\n  ')}`);
          }
        } catch (err) {
          const e = err as Error & { code?: string };
          throw new Error(
            `operations:\n  ${applied.trace.join('\n  ')}\n${e.code ? `${e.code}: ` : ''}${e.message}`,
          );
        } finally {
          await deleteMount(core.pool, m);
          await t.cleanup();
        }
      },
    );
    // No endOnFailure: the failure report should show the shrunk (smallest) counterexample.
    await fc.assert(property, { numRuns: RUNS, ...(SEED ? { seed: Number(SEED) } : {}) });
    expect(RUNS).toBeGreaterThan(0);
  }, 600_000);
});
