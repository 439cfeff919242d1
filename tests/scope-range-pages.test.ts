import { mkdir, rm, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { linePath } from '../shared/backends/entry-lines.ts';
import type { EntryStat } from '../shared/backends/types.ts';
import { scopePages } from '../shared/catalogue/nodes.ts';
import { newNodeFromStat } from '../shared/catalogue/node-writes.ts';
import { insertDiscovered } from '../shared/catalogue/reconcile-writes.ts';
import { inTransaction } from '../shared/db/pool.ts';
import { comparePaths } from '../shared/paths.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import { scanHintsOf } from '../shared/reconcile/run/scan-hints.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, runningRootJob, startFilestore, wireTestFilestore, type TestMount } from './support/filestore.ts';

/**
 * An audit reads the catalogue's lines of a subtree several ranges at a time where its pool
 * allows (catalogue/nodes.ts rangePages), cut where the previous audit passed every 1,000th
 * path (reconcile/run/scan-hints.ts). Cuts only split the key space: whatever they are (rows,
 * paths no row has, out of order, outside the scope) and whatever the page size, the lines
 * are exactly those of the one-page-at-a-time read, in byte order of path.
 */
const entry = (p: string, kind: EntryStat['kind']): EntryStat => ({
  path: p,
  kind,
  sizeBytes: kind === 'file' ? p.length : 0,
  mode: kind === 'file' ? 0o100644 : 0o40755,
  uid: 1,
  gid: 1,
  mtime: new Date('2024-05-01T10:00:00.123Z'),
  etag: null,
  symlinkTarget: null,
});

// Names whose byte order is not their UTF-16 order or a plain name order: "a-b" and "a.b" sort
// before "a/…", U+FF5E after an emoji's surrogates in UTF-16 but before it in bytes.
const DIRS = ['a', 'a-b', 'a.b', 'b', 'b/c', '\u{1f600}', '\uff5e'];
const FILES = DIRS.flatMap((d) => ['0', '1', 'x y', '\u00e9', '\u{1f600}', '\uff5e', 'z'].map((f) => `${d}/${f}`));
const ALL = [...DIRS, ...FILES];

async function lines(core: Filestore, mountId: string, scope: string, o: { pageSize: number; inFlight?: number; ends?: string[]; after?: string }): Promise<string[]> {
  const out: string[] = [];
  const split = o.ends ? { inFlight: o.inFlight ?? 2, ends: o.ends } : undefined;
  for await (const page of scopePages(core.pool, mountId, scope, true, o.after, o.pageSize, split)) out.push(...page);
  return out;
}

/** Every k-th of the paths, as an audit's hints are (k = its page size). */
const everyKth = (paths: string[], k: number) => paths.filter((_, i) => (i + 1) % k === 0);

describe('catalogue pages read several ranges at a time', () => {
  let core: Filestore;
  let t: TestMount;
  let jobId: number;
  /** Rows as a reconciliation's batch writer discovers them. */
  const discover = async (entries: EntryStat[]) => {
    const client = await core.pool.connect();
    try {
      await inTransaction(client, () => insertDiscovered(client, t.mount.id, entries.map((e) => newNodeFromStat(e)), { jobId, reason: 'manual' }));
    } finally {
      client.release();
    }
  };
  beforeAll(async () => {
    core = await wireTestFilestore({ poolSize: 6 });
    t = await createTestMount(core, 'local');
    jobId = (await runningRootJob(core, t.mount.id)).id;
    // Parents first (one level at a time), as a discovery inserts them.
    for (const depth of [1, 2, 3]) {
      await discover(ALL.filter((p) => p.split('/').length === depth).map((p) => entry(p, DIRS.includes(p) ? 'directory' : 'file')));
    }
  });
  afterAll(async () => {
    await t?.cleanup();
    await core?.close();
  });

  it('gives the lines of the one-page read, in byte order, for every page size, cut and number at once', async () => {
    const expected = await lines(core, t.mount.id, '', { pageSize: 1000 });
    const sorted = [...ALL].sort(comparePaths);
    expect(expected.map(linePath)).toEqual(['', ...sorted]);
    const cuts: Record<string, string[]> = {
      'every path': sorted,
      'every 3rd': everyKth(sorted, 3),
      'every 7th': everyKth(sorted, 7),
      'the last path only': [sorted.at(-1) as string],
      'paths no row has, out of order, repeated, outside the mount': ['b/c/zz', 'a-', 'a-', '\u{1f600}/\u{1f600}\u{1f600}', '', 'a/0', '0'],
    };
    for (const [what, ends] of Object.entries(cuts)) {
      for (const pageSize of [1, 2, 3, 5, 1000]) {
        for (const inFlight of [2, 3]) {
          expect(await lines(core, t.mount.id, '', { pageSize, inFlight, ends }), `${what}, pages of ${pageSize}, ${inFlight} at once`).toEqual(expected);
        }
      }
    }
  });

  it('a subtree and a resumed read give what the one-page read gives, whatever the cuts', async () => {
    const sorted = [...ALL].sort(comparePaths);
    for (const scope of ['a', 'b', '\u{1f600}']) {
      const one = await lines(core, t.mount.id, scope, { pageSize: 1000 });
      expect(one.length, scope).toBeGreaterThan(7);
      for (const pageSize of [1, 3, 1000]) {
        for (const ends of [sorted, everyKth(sorted, 4), ['a.b/z', 'b/c', 'b/c/0']]) {
          expect(await lines(core, t.mount.id, scope, { pageSize, ends }), `${scope} / ${pageSize} / ${ends.length} cuts`).toEqual(one);
        }
      }
    }
    const after = 'a.b/x y';
    const resumed = await lines(core, t.mount.id, '', { pageSize: 1000, after });
    expect(resumed.length).toBeGreaterThan(10);
    expect(resumed.every((l) => comparePaths(linePath(l), after) > 0)).toBe(true);
    for (const pageSize of [1, 2, 5]) expect(await lines(core, t.mount.id, '', { pageSize, inFlight: 3, ends: everyKth(sorted, 3), after })).toEqual(resumed);
  });

  it('rows written into a range not yet read, or after the last cut, are read with it, in their places', async () => {
    const sorted = [...ALL].sort(comparePaths);
    // Cuts every 4 paths, read 2 rows at a time: ranges go on from their last row.
    const pages = scopePages(core.pool, t.mount.id, '', true, undefined, 2, { inFlight: 2, ends: everyKth(sorted, 4) });
    const seen: string[] = [];
    while (seen.length < 40) seen.push(...((await pages.next()).value as string[]));
    expect(seen.some((l) => linePath(l).startsWith('\u{1f600}'))).toBe(false);
    // The last subtree in byte order is U+1F600's: one row inside one of its ranges, five
    // after its last path (after the last cut: the tail, read on page by page).
    const added = ['\u{1f600}/1a', ...[1, 2, 3, 4, 5].map((n) => `\u{1f600}/\u{1f600}zz${n}`)];
    await discover(added.map((p) => entry(p, 'file')));
    for await (const page of pages) seen.push(...page);
    const paths = seen.map(linePath);
    expect(paths.slice(-5)).toEqual(added.slice(1));
    expect(paths).toContain('\u{1f600}/1a');
    expect(paths).toEqual([...paths].sort(comparePaths));
    expect(new Set(paths).size).toBe(paths.length);
    expect(paths.length).toBe(1 + ALL.length + added.length);
  });
});

describe('an audit through a pool with connections to spare', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startFilestore({ poolSize: 8 });
  });
  afterAll(() => core.close());

  it('finds the tree unchanged, then exactly what changed, over ranges read two at a time (changes on the cuts too)', async () => {
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    try {
      // 3,000 files: three pages of the catalogue's lines and then some.
      for (let d = 0; d < 3; d++) {
        await mkdir(path.join(root, `d${d}`));
        await Promise.all(Array.from({ length: 1000 }, (_, f) => writeFile(path.join(root, `d${d}`, `f${String(f).padStart(4, '0')}`), 'x')));
      }
      const audit = async () => createReconciler(core)(await runningRootJob(core, t.mount.id), async () => {});
      expect(await audit()).toMatchObject({ checked: 3004, discovered: 3003 });
      // The discovery passed the paths the next audits cut their reads at: every 1,000th.
      const cuts = [...scanHintsOf(t.mount.id)];
      expect(cuts).toHaveLength(3);
      expect(cuts.every((p) => /^d\d\/f\d{4}$/.test(p))).toBe(true);
      expect(await audit()).toMatchObject({ checked: 3004, unchanged: 3004, updated: 0, discovered: 0, missing: 0 });
      // Changes in each range, on the cuts themselves too: modified, added, deleted.
      const ends = cuts;
      for (const p of [...ends, 'd0/f0500']) {
        await writeFile(path.join(root, p), 'changed');
        await utimes(path.join(root, p), new Date(), new Date('2020-01-01T00:00:00Z'));
      }
      await writeFile(path.join(root, 'd1', 'f0500b'), 'new');
      await rm(path.join(root, 'd2', 'f0500'));
      expect(await audit()).toMatchObject({ checked: 3005, unchanged: 2999, updated: 4, discovered: 1, missing: 1 });
    } finally {
      await t.cleanup();
    }
  });
});
