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
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, runningRootJob, startFilestore, wireTestFilestore, type TestMount } from './support/filestore.ts';

/**
 * An audit reads the catalogue's lines of a subtree several pages at a time where its pool
 * allows (catalogue/nodes.ts rangePages): ranges of paths marked out ahead, each read as a
 * page of its own. Whatever the page size and however the ranges fall, the lines are exactly
 * those of the one-page-at-a-time read, in byte order of path.
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

async function lines(core: Filestore, mountId: string, scope: string, o: { pageSize: number; inFlight: number; after?: string }): Promise<string[]> {
  const out: string[] = [];
  for await (const page of scopePages(core.pool, mountId, scope, true, o.after, o.pageSize, o.inFlight)) out.push(...page);
  return out;
}

describe('catalogue pages read several at a time', () => {
  let core: Filestore;
  let t: TestMount;
  beforeAll(async () => {
    core = await wireTestFilestore({ poolSize: 6 });
    t = await createTestMount(core, 'local');
    const { rows } = await core.pool.query<{ id: number }>(
      `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status) VALUES ($1, '', 'manual', '{}', 'running') RETURNING id`,
      [t.mount.id],
    );
    const client = await core.pool.connect();
    try {
      // Parents first (one level at a time), as a discovery inserts them.
      for (const depth of [1, 2, 3]) {
        const level = ALL.filter((p) => p.split('/').length === depth);
        await inTransaction(client, () => insertDiscovered(client, t.mount.id, level.map((p) => newNodeFromStat(entry(p, DIRS.includes(p) ? 'directory' : 'file'))), { jobId: rows[0]!.id, reason: 'manual' }));
      }
    } finally {
      client.release();
    }
  });
  afterAll(async () => {
    await t?.cleanup();
    await core?.close();
  });

  it('gives the lines of the one-page read, in byte order, for every page size and number at once', async () => {
    const expected = await lines(core, t.mount.id, '', { pageSize: 1000, inFlight: 1 });
    expect(expected.map(linePath)).toEqual(['', ...[...ALL].sort(comparePaths)]);
    // Page sizes around the node count and around RANGES_AT_ONCE (16) ranges of them.
    for (const pageSize of [1, 2, 3, 4, 5, 7, 16, ALL.length - 1, ALL.length, ALL.length + 1, 1000]) {
      for (const inFlight of [2, 3, 5]) {
        expect(await lines(core, t.mount.id, '', { pageSize, inFlight }), `pageSize ${pageSize}, ${inFlight} at once`).toEqual(expected);
      }
    }
  });

  it('a subtree and a resumed read give what the one-page read gives', async () => {
    for (const scope of ['a', 'b', '\u{1f600}']) {
      const one = await lines(core, t.mount.id, scope, { pageSize: 1000, inFlight: 1 });
      expect(one.length, scope).toBeGreaterThan(7);
      for (const pageSize of [1, 3, 8]) expect(await lines(core, t.mount.id, scope, { pageSize, inFlight: 2 }), `${scope} / ${pageSize}`).toEqual(one);
    }
    const after = 'a.b/x y';
    const resumed = await lines(core, t.mount.id, '', { pageSize: 1000, inFlight: 1, after });
    expect(resumed.length).toBeGreaterThan(10);
    expect(resumed.every((l) => comparePaths(linePath(l), after) > 0)).toBe(true);
    for (const pageSize of [1, 2, 5]) expect(await lines(core, t.mount.id, '', { pageSize, inFlight: 3, after })).toEqual(resumed);
  });

  it('rows written into a range not yet read, or after the last one, are read with it, in their places', async () => {
    const pages = scopePages(core.pool, t.mount.id, '', true, undefined, 2, 2);
    const seen: string[] = [];
    // Far enough that every range is marked out (16 at a time, the next 16 while the first are read).
    while (seen.length < 40) seen.push(...((await pages.next()).value as string[]));
    expect(seen.some((l) => linePath(l).startsWith('\u{1f600}'))).toBe(false);
    // The last subtree in byte order is U+1F600's: one row in one of its marked ranges, five
    // after its last path (the tail after the last range, read on page by page).
    const added = ['\u{1f600}/1a', ...[1, 2, 3, 4, 5].map((n) => `\u{1f600}/\u{1f600}zz${n}`)];
    const client = await core.pool.connect();
    try {
      const { rows } = await client.query<{ id: number }>(`SELECT id FROM filestore.reconciliation_jobs WHERE mount_id = $1 LIMIT 1`, [t.mount.id]);
      await inTransaction(client, () => insertDiscovered(client, t.mount.id, added.map((p) => newNodeFromStat(entry(p, 'file'))), { jobId: rows[0]!.id, reason: 'manual' }));
    } finally {
      client.release();
    }
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

  it('finds the tree unchanged, then exactly what changed, over pages read two at a time', async () => {
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
      expect(await audit()).toMatchObject({ checked: 3004, unchanged: 3004, updated: 0, discovered: 0, missing: 0 });
      // Changes in each page's range, among them the last path of each range (the paths that
      // mark the ranges out): modified, added, deleted.
      const paths = ['', ...Array.from({ length: 3 }, (_, d) => [`d${d}`, ...Array.from({ length: 1000 }, (_, f) => `d${d}/f${String(f).padStart(4, '0')}`)]).flat()];
      const ends = [1000, 2000, 3000].map((n) => paths[n] as string);
      expect(ends.every((p) => p.includes('/f'))).toBe(true);
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
