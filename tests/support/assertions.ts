import { expect } from 'vitest';
import type { Filestore } from '../../shared/runtime.ts';
import type { Backend } from '../../shared/backends/types.ts';
import { FilestoreError } from '../../shared/errors.ts';

/**
 * Every live directory's rollup (row + deltas) equals totals recomputed from the live rows
 * that count: present on storage, i.e. not MISSING (shared/catalogue/rollups.ts).
 */
export async function expectExactRollups(core: Filestore, mountId: string): Promise<void> {
  const { rows } = await core.pool.query(
    `WITH dirs AS (SELECT id, path FROM filestore.nodes WHERE mount_id = $1 AND kind = 'directory' AND deleted_at IS NULL),
     truth AS (
       SELECT d.id, d.path,
              coalesce(sum(c.size_bytes) FILTER (WHERE c.kind = 'file'), 0)::bigint AS size_bytes,
              count(c.id) FILTER (WHERE c.kind = 'file')::bigint AS file_count,
              count(c.id) FILTER (WHERE c.kind = 'directory')::bigint AS dir_count,
              count(c.id) FILTER (WHERE c.parent_id = d.id)::bigint AS child_count
         FROM dirs d LEFT JOIN filestore.nodes c ON c.mount_id = $1 AND c.deleted_at IS NULL AND c.consistency_state <> 'MISSING'
          AND CASE WHEN d.path = '' THEN c.path <> '' ELSE c.path >= d.path || '/' AND c.path < d.path || '0' END
        GROUP BY d.id, d.path),
     stored AS (
       SELECT r.node_id AS id, (r.size_bytes + coalesce(sum(x.size_bytes), 0))::bigint AS size_bytes,
              (r.file_count + coalesce(sum(x.file_count), 0))::bigint AS file_count,
              (r.dir_count + coalesce(sum(x.dir_count), 0))::bigint AS dir_count,
              (r.child_count + coalesce(sum(x.child_count), 0))::bigint AS child_count
         FROM filestore.rollups r LEFT JOIN filestore.rollup_deltas x ON x.node_id = r.node_id
        WHERE r.node_id IN (SELECT id FROM dirs) GROUP BY r.node_id)
     SELECT t.path, t.size_bytes, t.file_count, t.dir_count, t.child_count,
            s.size_bytes AS s_size, s.file_count AS s_files, s.dir_count AS s_dirs, s.child_count AS s_children
       FROM truth t LEFT JOIN stored s ON s.id = t.id ORDER BY t.path`,
    [mountId],
  );
  for (const r of rows) {
    expect({ path: r.path, size: r.s_size, files: r.s_files, dirs: r.s_dirs, children: r.s_children }).toEqual({
      path: r.path,
      size: r.size_bytes,
      files: r.file_count,
      dirs: r.dir_count,
      children: r.child_count,
    });
  }
}

/** Awaits a promise expected to fail with a FilestoreError of `code`. */
export async function expectCode(p: Promise<unknown>, code: string): Promise<FilestoreError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, `expected ${code}`).toBeInstanceOf(FilestoreError);
  expect((err as FilestoreError).code).toBe(code);
  return err as FilestoreError;
}

export async function readAll(backend: Backend, path: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await backend.read(path)) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function livePaths(core: Filestore, mountId: string): Promise<string[]> {
  const { rows } = await core.pool.query<{ path: string }>(
    `SELECT path FROM filestore.nodes WHERE mount_id = $1 AND deleted_at IS NULL ORDER BY path`,
    [mountId],
  );
  return rows.map((r) => r.path);
}

export async function journalOf(core: Filestore, mountId: string) {
  const { rows } = await core.pool.query(
    `SELECT id, command, status, error, result, recovered FROM filestore.journal_entries WHERE mount_id = $1 ORDER BY id`,
    [mountId],
  );
  return rows as Array<{ id: number; command: string; status: string; error: { code: string } | null; result: Record<string, unknown> | null; recovered: boolean }>;
}
