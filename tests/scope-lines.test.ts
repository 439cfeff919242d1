import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { comparableLine, entryLine, linePath, recordsExactly, rowEntry } from '../shared/backends/entry-lines.ts';
import type { EntryStat } from '../shared/backends/types.ts';
import { findLiveByPath, scopePages } from '../shared/catalogue/nodes.ts';
import { newNodeFromStat } from '../shared/catalogue/node-writes.ts';
import { insertDiscovered } from '../shared/catalogue/reconcile-writes.ts';
import { inTransaction } from '../shared/db/pool.ts';
import { normalizePath } from '../shared/paths.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, wireTestFilestore, type TestMount } from './support/filestore.ts';

/**
 * An audit tells an unchanged node by text alone: the catalogue's line of a row, built in SQL
 * (catalogue/nodes.ts SCOPE_LINE), begins with the line built in TypeScript for what storage
 * holds (backends/entry-lines.ts). Nothing but this test holds the two builders together: for
 * awkward entries, the line PostgreSQL builds from the row the reconciler's own insert wrote is
 * exactly the entry's comparable line followed by id, version and sha256.
 */
const at = (iso: string) => new Date(iso);
const entry = (e: Partial<EntryStat> & Pick<EntryStat, 'path' | 'kind'>): EntryStat => ({
  sizeBytes: 0,
  mode: null,
  uid: null,
  gid: null,
  mtime: null,
  etag: null,
  symlinkTarget: null,
  ...e,
});

const DIR = 'pin';
const ENTRIES: Array<{ e: EntryStat; sha256?: string }> = [
  { e: entry({ path: DIR, kind: 'directory', mode: 0o40755, uid: 1000, gid: 1000, mtime: at('2024-05-01T10:00:00.123Z') }) },
  { e: entry({ path: `${DIR}/plain.txt`, kind: 'file', sizeBytes: 12, mode: 0o100644, uid: 1000, gid: 100, mtime: at('2024-05-01T10:00:00.007Z') }) },
  // A directory's size and mtime are not compared (its mtime moves with every entry added).
  { e: entry({ path: `${DIR}/dir with  spaces`, kind: 'directory', sizeBytes: 4096, mode: 0o40700, uid: 0, gid: 0, mtime: at('2023-01-01T00:00:00.999Z') }) },
  // Tabs, newlines and backslashes cannot be in a path (below), but can in a symlink's target: hex on both sides.
  {
    e: entry({
      path: `${DIR}/link`,
      kind: 'symlink',
      mode: 0o120777,
      uid: 1000,
      gid: 1000,
      mtime: at('2024-05-01T10:00:01.5Z'),
      symlinkTarget: '../tärget with space/\\back\\slash\ttab\nnewline\u0001 🎉',
    }),
  },
  { e: entry({ path: `${DIR}/dangling`, kind: 'symlink', mtime: at('2024-05-01T10:00:02Z'), symlinkTarget: 'nowhere/at all' }) },
  { e: entry({ path: `${DIR}/ünïcödé 日本語 🎉 (1) ' " % , ; E'x`, kind: 'file', sizeBytes: 1, mode: 0o100600, uid: 501, gid: 20, mtime: at('2024-02-29T23:59:59.999Z') }) },
  // Nothing known but the kind and size: mtime, mode, uid and gid NULL.
  { e: entry({ path: `${DIR}/nulls`, kind: 'file', sizeBytes: 0 }) },
  // An S3 object: an etag (multipart), no owner or mode, a size above 2^32 and 2^31 ms.
  { e: entry({ path: `${DIR}/s3 object.bin`, kind: 'file', sizeBytes: 5 * 1024 ** 4, mtime: at('2038-01-19T03:14:08.001Z'), etag: '9b2cf535f27731c974343645a3985328-12' }) },
  { e: entry({ path: `${DIR}/biggest`, kind: 'file', sizeBytes: Number.MAX_SAFE_INTEGER, mtime: at('2262-04-11T23:47:16.854Z'), etag: 'd41d8cd98f00b204e9800998ecf8427e' }) },
  // Before the epoch: negative milliseconds, rounded the same way.
  { e: entry({ path: `${DIR}/old`, kind: 'file', sizeBytes: 3, mode: 0o100444, uid: 65534, gid: 65534, mtime: at('1969-12-31T23:59:58.5Z') }) },
  // Hashed when discovered: the line ends with the sha256.
  { e: entry({ path: `${DIR}/hashed`, kind: 'file', sizeBytes: 5, mode: 0o100644, uid: 1, gid: 1, mtime: at('2024-05-01T10:00:03Z') }), sha256: 'a'.repeat(64) },
];

describe('scope lines: SQL (SCOPE_LINE) and TypeScript (entry-lines.ts) build the same line', () => {
  let core: Filestore;
  let t: TestMount;
  let jobId: number;
  beforeAll(async () => {
    core = await wireTestFilestore();
    t = await createTestMount(core, 'local');
    const { rows } = await core.pool.query<{ id: number }>(
      `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status) VALUES ($1, '', 'manual', '{}', 'running') RETURNING id`,
      [t.mount.id],
    );
    jobId = rows[0]!.id;
    // The rows as a reconciliation discovers them (the insert of Run's batch writer).
    const client = await core.pool.connect();
    try {
      await inTransaction(client, () => insertDiscovered(client, t.mount.id, ENTRIES.map(({ e, sha256 }) => newNodeFromStat(e, sha256 ?? null)), { jobId, reason: 'manual' }));
    } finally {
      client.release();
    }
  });
  afterAll(async () => {
    await t?.cleanup();
    await core?.close();
  });

  it('the line PostgreSQL builds from each row is the entry comparable line, then id, version and sha256', async () => {
    // The subtree's rows come from SQL (the first line, the directory itself, from TypeScript).
    const sqlLines = new Map<string, string>();
    for await (const page of scopePages(core.pool, t.mount.id, DIR, true)) for (const line of page) sqlLines.set(linePath(line), line);
    expect(sqlLines.size).toBe(ENTRIES.length);
    for (const { e, sha256 } of ENTRIES.slice(1)) {
      const node = await findLiveByPath(core.pool, t.mount.id, e.path);
      expect(node, e.path).not.toBeNull();
      const sql = sqlLines.get(e.path);
      expect(sql, e.path).toBe(`${comparableLine(e)}${node!.id}\t${node!.version}\t${sha256 ?? ''}`);
      // What the audit's comparison concludes from the two lines: unchanged, and the entry parses back.
      expect(recordsExactly(sql!, entryLine(e)), e.path).toBe(true);
      expect(rowEntry(entryLine(e)), e.path).toEqual({ ...e, sizeBytes: e.kind === 'file' ? e.sizeBytes : 0, mtime: e.mtime });
    }
  });

  it('the line TypeScript builds from a node (the scope itself) equals the one SQL builds for its row', async () => {
    const fromParent = new Map<string, string>();
    for await (const page of scopePages(core.pool, t.mount.id, '', true)) for (const line of page) fromParent.set(linePath(line), line);
    for (const { e } of ENTRIES) {
      const first = (await scopePages(core.pool, t.mount.id, e.path, false).next()).value as string[];
      expect(first[0], e.path).toBe(fromParent.get(e.path));
    }
  });

  it('a changed field, or a state other than ACTIVE, makes the lines differ', async () => {
    const file = ENTRIES[1]!.e;
    const sql = async () => {
      for await (const page of scopePages(core.pool, t.mount.id, DIR, true)) for (const line of page) if (linePath(line) === file.path) return line;
      throw new Error('no line');
    };
    const line = await sql();
    expect(recordsExactly(line, entryLine(file))).toBe(true);
    for (const changed of [
      { sizeBytes: 13 },
      { mtime: new Date(file.mtime!.getTime() + 1) },
      { mode: 0o100600 },
      { uid: 1001 },
      { gid: 101 },
      { etag: 'x' },
      { kind: 'symlink' as const, symlinkTarget: 'plain.txt' },
    ]) {
      expect(recordsExactly(line, entryLine({ ...file, ...changed })), JSON.stringify(changed)).toBe(false);
    }
    await core.pool.query(`UPDATE filestore.nodes SET consistency_state = 'INCONSISTENT' WHERE mount_id = $1 AND path = $2`, [t.mount.id, file.path]);
    expect(recordsExactly(await sql(), entryLine(file))).toBe(false);
  });

  it('what would break a line (a tab or newline in a path) is never a path: control characters and backslashes are refused', () => {
    for (const name of ['a\tb', 'a\nb', 'a\rb', 'a\\b', 'a\u0000b', 'a\u007fb', 'a\u0085b']) {
      expect(() => normalizePath(`${DIR}/${name}`), JSON.stringify(name)).toThrow();
    }
  });
});
