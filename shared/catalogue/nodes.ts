import type { Queryable } from '../db/pool.ts';
import { comparePaths, prefixUpperBound } from '../paths.ts';
import { descendantsCondition } from './subtree.ts';
import { NODE_COLUMNS, SNAPSHOT_STATE_READ } from './rows.ts';
import type { CatalogueNode, ConsistencyState } from './types.ts';
import type { NodeKind } from '../backends/types.ts';
import { comparableFields, linePath, text } from '../backends/entry-lines.ts';

/** Reads of the nodes table. Writes live in node-writes.ts. */

export async function findLiveByPath(q: Queryable, mountId: string, path: string): Promise<CatalogueNode | null> {
  const { rows } = await q.query<CatalogueNode>({
    name: 'filestore.nodes.findLiveByPath',
    text: `SELECT ${NODE_COLUMNS} FROM filestore.nodes WHERE mount_id = $1 AND path = $2 AND deleted_at IS NULL`,
    values: [mountId, path],
  });
  return rows[0] ?? null;
}

/** Live nodes at the given paths, keyed by path. */
export async function findLiveByPaths(q: Queryable, mountId: string, paths: string[]): Promise<Map<string, CatalogueNode>> {
  if (paths.length === 0) return new Map();
  const { rows } = await q.query<CatalogueNode>({
    name: 'filestore.nodes.findLiveByPaths',
    text: `SELECT ${NODE_COLUMNS} FROM filestore.nodes WHERE mount_id = $1 AND path = ANY($2::text[]) AND deleted_at IS NULL`,
    values: [mountId, paths],
  });
  return new Map(rows.map((r) => [r.path, r]));
}

/**
 * The S3 event sequencer last applied to the live node at each of `paths` (null: none
 * recorded; no entry: no live node). The S3-event Lambda drops events not newer than it
 * (shared/reconcile/sequencer.ts).
 */
export async function findSequencers(q: Queryable, mountId: string, paths: readonly string[]): Promise<Map<string, string | null>> {
  if (paths.length === 0) return new Map();
  const { rows } = await q.query<{ path: string; sequencer: string | null }>({
    name: 'filestore.nodes.findSequencers',
    text: `SELECT path, sequencer FROM filestore.nodes WHERE mount_id = $1 AND path = ANY($2::text[]) AND deleted_at IS NULL`,
    values: [mountId, [...paths]],
  });
  return new Map(rows.map((r) => [r.path, r.sequencer]));
}

/** The S3 event sequencer of the live node at `path`: undefined when there is no live node. */
export async function findSequencer(q: Queryable, mountId: string, path: string): Promise<string | null | undefined> {
  return (await findSequencers(q, mountId, [path])).get(path);
}

export async function findById(q: Queryable, id: number): Promise<CatalogueNode | null> {
  const { rows } = await q.query<CatalogueNode>(`SELECT ${NODE_COLUMNS} FROM filestore.nodes WHERE id = $1`, [id]);
  return rows[0] ?? null;
}

export interface ListNodesOptions {
  mountId: string;
  /** Raw path prefix (not necessarily a directory): "docs/re" matches "docs/readme.md". */
  prefix?: string | undefined;
  state?: ConsistencyState | undefined;
  kind?: NodeKind | undefined;
  /** Keyset cursor: only paths strictly after this one. */
  afterPath?: string | undefined;
  limit: number;
}

const STATES = new Set<ConsistencyState>(['ACTIVE', 'INCONSISTENT', 'MISSING']);
const KINDS = new Set<NodeKind>(['file', 'directory', 'symlink']);

/** Live nodes of a mount in byte order of path, keyset-paginated. */
export async function listLive(q: Queryable, o: ListNodesOptions): Promise<CatalogueNode[]> {
  const where = ['mount_id = $1', 'deleted_at IS NULL'];
  const params: unknown[] = [o.mountId];
  const add = (sql: string, value: unknown) => {
    params.push(value);
    where.push(sql.replace('?', `$${params.length}`));
  };
  if (o.prefix) {
    add('path >= ?', o.prefix);
    const upper = prefixUpperBound(o.prefix);
    if (upper !== null) add('path < ?', upper);
  }
  if (o.afterPath !== undefined) add('path > ?', o.afterPath);
  // Enum filters are inlined (checked against their closed sets), so that even a generic
  // plan can see "not ACTIVE" and use the small nodes_not_active index.
  if (o.state) {
    if (!STATES.has(o.state)) throw new Error(`invalid consistency state ${o.state}`);
    where.push(`consistency_state = '${o.state}'`, ...(o.state === 'ACTIVE' ? [] : ["consistency_state <> 'ACTIVE'"]));
  }
  if (o.kind) {
    if (!KINDS.has(o.kind)) throw new Error(`invalid node kind ${o.kind}`);
    where.push(`kind = '${o.kind}'`);
  }
  params.push(o.limit);
  const { rows } = await q.query<CatalogueNode>(
    `SELECT ${NODE_COLUMNS} FROM filestore.nodes WHERE ${where.join(' AND ')} ORDER BY path LIMIT $${params.length}`,
    params,
  );
  return rows;
}

/** Direct live children of a directory node in byte order of name, keyset-paginated. */
export async function listChildren(
  q: Queryable,
  parentId: number,
  limit: number,
  afterName?: string,
): Promise<CatalogueNode[]> {
  // Two statements rather than "$2 IS NULL OR name > $2": a generic plan (see db/pool.ts)
  // can use the cursor as an index bound only when it is unconditional.
  const { rows } =
    afterName === undefined
      ? await q.query<CatalogueNode>(
          `SELECT ${NODE_COLUMNS} FROM filestore.nodes WHERE parent_id = $1 AND deleted_at IS NULL ORDER BY name LIMIT $2`,
          [parentId, limit],
        )
      : await q.query<CatalogueNode>(
          `SELECT ${NODE_COLUMNS} FROM filestore.nodes WHERE parent_id = $1 AND deleted_at IS NULL AND name > $2 ORDER BY name LIMIT $3`,
          [parentId, afterName, limit],
        );
  return rows;
}

export interface Snapshot {
  nodeId: number;
  version: number;
  journalEntryId: number | null;
  reconciliationJobId: number | null;
  state: Record<string, unknown>;
  createdAt: Date;
}

export async function listSnapshots(q: Queryable, nodeId: number, limit: number, afterVersion = 0): Promise<Snapshot[]> {
  const { rows } = await q.query<Snapshot>(
    `SELECT node_id AS "nodeId", version, journal_entry_id AS "journalEntryId",
            reconciliation_job_id AS "reconciliationJobId", ${SNAPSHOT_STATE_READ} AS state, created_at AS "createdAt"
       FROM filestore.snapshots WHERE node_id = $1 AND version > $2 ORDER BY version LIMIT $3`,
    [nodeId, afterVersion, limit],
  );
  return rows;
}

/** Live nodes strictly below `dir` (an index range count). */
export async function countLiveDescendants(q: Queryable, mountId: string, dir: string): Promise<number> {
  const below = descendantsCondition(dir, 2);
  const { rows } = await q.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL AND ${below.sql}`,
    [mountId, ...below.params],
  );
  return rows[0]?.n ?? 0;
}

/**
 * A catalogue row as an audit reads it: one line of text,
 * `path \t state \t <comparable fields> \t id \t version \t sha256` (SCOPE_LINE). Most rows
 * of an audit are unchanged, and the line lets the comparison tell so without building
 * anything: see backends/entry-lines.ts. `scopeRowNode` builds the node when one is needed.
 */
export type ScopeRow = string;

/** Rows per page of an audit's catalogue read (scopePages). */
export const SCOPE_PAGE_ROWS = 1000;

/**
 * The live nodes a reconciliation of `path` compares, in byte order of path, in pages: the
 * node itself and, when it is a directory, its descendants (recursive) or its children.
 *
 * An audit reads the whole catalogue of a mount, so this is its hottest read. Each page is
 * one row holding one text value (the page's rows as lines, built by string_agg): splitting
 * a string costs a fraction of decoding thousands of rows of a dozen typed columns each.
 * The next page is read while the caller works through this one, or (`split`) the next few.
 */
export async function* scopePages(
  q: Queryable,
  mountId: string,
  path: string,
  recursive: boolean,
  /** Resume: only nodes after this path (which lies in the scope). */
  startAfter?: string,
  /**
   * Rows per page. Small enough that a page dies young: one that outlives a couple of
   * scavenges while it is compared (and the next one read) is promoted to V8's old
   * generation and stays until a full GC — a 5,000-row page made the heap of a 1M-row
   * audit grow by ~100 bytes per row. (Its text also stays under 128 KB, above which V8
   * allocates it in the old generation directly.)
   */
  pageSize = SCOPE_PAGE_ROWS,
  /**
   * Where to split the read (a subtree only): paths that cut the scope into ranges, read
   * `inFlight` at a time on as many connections (PostgreSQL writes a page's lines on one core:
   * an audit that read one page at a time waited for it most of its scan). Any paths do: they
   * only split the key space (those outside the scope or not after `startAfter` are ignored),
   * so the ends a previous scan of the same scope passed every `pageSize` paths (ScanHints)
   * split it into pages of about that size at no cost.
   */
  split?: { inFlight: number; ends: readonly string[] },
): AsyncGenerator<ScopeRow[]> {
  const self = await findLiveByPath(q, mountId, path);
  if (self && startAfter === undefined) yield [lineOfNode(self)];
  if (!recursive && (!self || self.kind !== 'directory')) return;
  const below = descendantsCondition(path, 3);
  const subtree = recursive || !self;
  const where = subtree ? `mount_id = $1 AND deleted_at IS NULL AND path > $2 AND ${below.sql}` : `parent_id = $1 AND deleted_at IS NULL AND path > $2`;
  const from = startAfter ?? path;
  // Paths to cut the read at: those inside the scope and after where it starts.
  let ends: string[] = [];
  if (subtree && split && split.inFlight > 1) {
    const [low, high] = path === '' ? [null, null] : below.params;
    ends = [...new Set(split.ends)]
      .filter((e) => comparePaths(e, from) > 0 && (low == null || (comparePaths(e, low) >= 0 && comparePaths(e, high as string) < 0)))
      .sort(comparePaths);
  }
  const scope: RangeScope = subtree
    ? { kind: 'subtree', where, values: [mountId, ...below.params], upper: 3 + below.params.length }
    : { kind: 'children', where, values: [String(self.id)], upper: 3 };
  yield* rangePages(q, scope, from, ends, pageSize, ends.length > 0 ? (split?.inFlight ?? 1) : 1);
}

/** scopePages' condition: `$1` the mount (or the parent's id), `$2` the lower bound, then its own parameters; `$upper` a range's end. */
interface RangeScope {
  kind: 'subtree' | 'children';
  where: string;
  /** The values of the condition, without the lower bound. */
  values: string[];
  upper: number;
}

/**
 * The scope's lines after `after`, cut at `ends` (sorted, after `after`; none: one keyset
 * read after another) into ranges (after, e1], (e1, e2], …, (ek, end of the scope), read
 * `inFlight` at a time and handed over in order; the next read starts while the caller works
 * through a page. Each read takes at most `pageSize` rows of its range, and a full page's range
 * goes on from its last row, before the ranges after it: a page is never larger than
 * `pageSize`. Each read is a read of its own: a row written into a range not yet read is read
 * with it; the ranges never overlap and leave nothing between them.
 */
async function* rangePages(q: Queryable, scope: RangeScope, after: string, ends: readonly string[], pageSize: number, inFlight: number): AsyncGenerator<ScopeRow[]> {
  const [first, ...rest] = scope.values as [string, ...string[]];
  const read = async ({ from, to }: Range): Promise<ScopeRow[]> => {
    const { rows } = await q.query<{ page: string | null }>({
      name: `filestore.nodes.scope${to === null ? 'Page' : 'Range'}.${scope.kind}.${rest.length}.${pageSize}`,
      // string_agg takes the rows in the subquery's order (the merge checks the order anyway).
      text: `SELECT string_agg(${SCOPE_LINE}, E'\n') AS page
               FROM (SELECT * FROM filestore.nodes WHERE ${scope.where}${to === null ? '' : ` AND path <= $${scope.upper}`}
                     ORDER BY path LIMIT ${pageSize}) t`,
      values: to === null ? [first, from, ...rest] : [first, from, ...rest, to],
    });
    const lines = rows[0]?.page ?? null;
    return lines === null ? [] : lines.split('\n');
  };
  const start = (range: Range) => {
    const rows = read(range);
    rows.catch(() => {}); // awaited in turn; a caller that stops early must not leave it unhandled
    return { range, rows };
  };
  const ranges: Range[] = [...ends.map((to, i) => ({ from: i === 0 ? after : (ends[i - 1] as string), to })), { from: ends.at(-1) ?? after, to: null }];
  const pending: Array<{ range: Range; rows: Promise<ScopeRow[]> }> = [];
  try {
    for (;;) {
      while (pending.length < inFlight && ranges.length > 0) pending.push(start(ranges.shift() as Range));
      const next = pending.shift();
      if (!next) return;
      const rows = await next.rows;
      // A full page: its range goes on from its last row, ahead of the ranges after it.
      const last = rows[rows.length - 1];
      if (rows.length === pageSize && last) pending.unshift(start({ from: linePath(last), to: next.range.to }));
      if (rows.length > 0) yield rows;
    }
  } finally {
    await Promise.allSettled(pending.map((p) => p.rows));
  }
}

interface Range {
  /** Paths after this one… */
  from: string;
  /** …up to this one (null: to the subtree's end). */
  to: string | null;
}

// One line per row. Paths and the other text fields hold no tab or newline (control characters
// are not addressable; symlink targets travel hex-encoded); NULL comes out empty.
// The comparable fields, between state and id, are exactly what backends/entry-lines.ts
// `comparableFields` writes for what storage holds: size only for files, mtime (whole ms) except for directories.
// The mtime in ms through float8 (date_part) costs a third less of the page than through
// numeric (extract), and is exact for what the catalogue stores (whole ms, from a Date): the
// float's error, ~2e-4 ms, is far below the rounding. Rounding is also what Node does to a
// file's mtime for its Date (and so for the entry line).
// concat_ws with the tab as its separator builds the line in a fifth less time than concat with
// a tab between the fields (100k rows: ~145 vs ~180 ms of PostgreSQL's CPU, same text), but it
// skips a NULL argument with its separator: every field that can be NULL is coalesced to ''.
const SCOPE_LINE = `concat_ws(E'\t', path, consistency_state, kind,
  CASE WHEN kind = 'file' THEN size_bytes ELSE 0 END,
  coalesce(CASE WHEN kind <> 'directory' THEN round(date_part('epoch', mtime) * 1000)::bigint END::text, ''),
  coalesce(mode::text, ''), coalesce(uid::text, ''), coalesce(gid::text, ''), coalesce(etag, ''),
  CASE WHEN kind = 'symlink' THEN coalesce(encode(convert_to(metadata->>'symlinkTarget', 'UTF8'), 'hex'), '') ELSE '' END,
  id, version, coalesce(sha256, ''))`;

function lineOfNode(n: CatalogueNode): string {
  const target = typeof n.metadata.symlinkTarget === 'string' ? n.metadata.symlinkTarget : null;
  const ms = n.mtime === null ? null : new Date(n.mtime).getTime();
  return `${n.path}\t${n.consistencyState}\t${comparableFields(n.kind, n.sizeBytes, ms, n.mode, n.uid, n.gid, n.etag, target)}${n.id}\t${n.version}\t${text(n.sha256)}`;
}

/** The row's node id without building the node. */
export function scopeRowId(row: ScopeRow): number {
  return Number(row.split('\t')[10]);
}

const intOrNull = (s: string) => (s === '' ? null : Number(s));

/** The row as a node: what a comparison and the writes after it use; timestamps but mtime are left empty. */
export function scopeRowNode(row: ScopeRow, mountId: string): CatalogueNode {
  const f = row.split('\t');
  const path = f[0] as string;
  const kind = f[2] as CatalogueNode['kind'];
  const target = f[9] as string;
  return {
    id: Number(f[10]),
    mountId,
    path,
    parentId: null,
    name: path.slice(path.lastIndexOf('/') + 1),
    kind,
    sizeBytes: Number(f[3]),
    sha256: f[12] === '' ? null : (f[12] as string),
    etag: f[8] === '' ? null : (f[8] as string),
    sequencer: null,
    mode: intOrNull(f[5] as string),
    uid: intOrNull(f[6] as string),
    gid: intOrNull(f[7] as string),
    // A directory's mtime is not compared and not carried.
    mtime: f[4] === '' ? null : new Date(Number(f[4])),
    version: Number(f[11]),
    consistencyState: f[1] as ConsistencyState,
    consistencyCheckedAt: null,
    lastDriftDetectedAt: null,
    lastReconciledAt: null,
    deletedAt: null,
    metadata: target === '' ? {} : { symlinkTarget: Buffer.from(target, 'hex').toString('utf8') },
    createdAt: null as unknown as Date,
    updatedAt: null as unknown as Date,
  };
}
