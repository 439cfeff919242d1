import type { Queryable } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';
import { MOUNT_COLUMNS } from './rows.ts';
import type { Mount } from './types.ts';

export interface NewMount {
  key: string;
  kind: 'local' | 's3';
  rootPath?: string | null | undefined;
  bucket?: string | null | undefined;
  prefix?: string | undefined;
  region?: string | null | undefined;
  endpoint?: string | null | undefined;
  agentId?: string | null | undefined;
  accessMode?: 'rw' | 'ro' | undefined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Registers a mount and its root directory node (path "") with an empty rollup, in one transaction-safe statement. */
export async function createMount(q: Queryable, m: NewMount): Promise<Mount> {
  try {
    const { rows } = await q.query<Mount>(
      `WITH m AS (
         INSERT INTO filestore.mounts (key, kind, root_path, bucket, prefix, region, endpoint, agent_id, access_mode)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *
       ), root AS (
         INSERT INTO filestore.nodes (mount_id, path, name, kind, consistency_checked_at)
         SELECT id, '', '', 'directory', now() FROM m RETURNING id, mount_id
       ), roll AS (
         INSERT INTO filestore.rollups (node_id, mount_id) SELECT id, mount_id FROM root
       )
       SELECT ${MOUNT_COLUMNS} FROM m`,
      [
        m.key,
        m.kind,
        m.rootPath ?? null,
        m.bucket ?? null,
        m.prefix ?? '',
        m.region ?? null,
        m.endpoint ?? null,
        m.agentId ?? null,
        m.accessMode ?? 'rw',
      ],
    );
    return rows[0] as Mount;
  } catch (err) {
    if ((err as { code?: string }).code === '23505') {
      throw new FilestoreError('ALREADY_EXISTS', `a mount with key "${m.key}" already exists`);
    }
    if ((err as { code?: string }).code === '23514') {
      throw new FilestoreError('VALIDATION_ERROR', 'invalid mount: key must match ^[a-z0-9][a-z0-9_-]{0,62}$, a local mount needs rootPath and an s3 mount a bucket');
    }
    throw err;
  }
}

/** A mount by its id or its key; null when neither matches. */
export async function findMount(q: Queryable, idOrKey: string): Promise<Mount | null> {
  const { rows } = UUID.test(idOrKey)
    ? await q.query<Mount>(`SELECT ${MOUNT_COLUMNS} FROM filestore.mounts WHERE id = $1`, [idOrKey])
    : await q.query<Mount>(`SELECT ${MOUNT_COLUMNS} FROM filestore.mounts WHERE key = $1`, [idOrKey]);
  return rows[0] ?? null;
}

export async function getMount(q: Queryable, idOrKey: string): Promise<Mount> {
  const mount = await findMount(q, idOrKey);
  if (!mount) throw new FilestoreError('MOUNT_NOT_FOUND', `no mount "${idOrKey}"; list mounts with \`filestore mounts list\``);
  return mount;
}

export async function listMounts(q: Queryable): Promise<Mount[]> {
  const { rows } = await q.query<Mount>(`SELECT ${MOUNT_COLUMNS} FROM filestore.mounts ORDER BY key`);
  return rows;
}

export async function updateMount(
  q: Queryable,
  idOrKey: string,
  patch: { accessMode?: 'rw' | 'ro' | undefined; state?: 'active' | 'paused' | undefined; agentId?: string | null | undefined },
): Promise<Mount> {
  const mount = await getMount(q, idOrKey);
  const { rows } = await q.query<Mount>(
    `UPDATE filestore.mounts SET access_mode = coalesce($2, access_mode), state = coalesce($3, state),
            agent_id = CASE WHEN $4::boolean THEN $5 ELSE agent_id END, updated_at = now()
      WHERE id = $1 RETURNING ${MOUNT_COLUMNS}`,
    [mount.id, patch.accessMode ?? null, patch.state ?? null, patch.agentId !== undefined, patch.agentId ?? null],
  );
  return rows[0] as Mount;
}

/**
 * Removes a mount and everything recorded about it (nodes, history, journal, rollups,
 * events, jobs) in one transaction-sized statement. Storage is not touched.
 */
export async function deleteMount(q: Queryable, idOrKey: string): Promise<{ nodes: number }> {
  const mount = await getMount(q, idOrKey);
  const { rows } = await q.query<{ nodes: number }>(
    `WITH n AS (DELETE FROM filestore.nodes WHERE mount_id = $1 RETURNING id),
          s AS (DELETE FROM filestore.snapshots WHERE node_id IN (SELECT id FROM n)),
          d AS (DELETE FROM filestore.rollup_deltas WHERE node_id IN (SELECT id FROM n)),
          j AS (DELETE FROM filestore.journal_entries WHERE mount_id = $1),
          o AS (DELETE FROM filestore.outbox WHERE mount_id = $1),
          m AS (DELETE FROM filestore.mounts WHERE id = $1)
     SELECT count(*)::int AS nodes FROM n`,
    [mount.id],
  );
  return { nodes: rows[0]?.nodes ?? 0 };
}

/**
 * Seconds since each active mount's last complete audit began (audited_at: every node is
 * checked as of then), or since its registration when none ever finished; by the database's
 * clock, which also stamped audited_at. `agentId` keeps that agent's local mounts; `mountIds` narrows.
 */
export async function auditAges(
  q: Queryable,
  o: { agentId?: string | undefined; mountIds?: readonly string[] | undefined } = {},
): Promise<Array<{ key: string; seconds: number }>> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (o.agentId !== undefined) {
    params.push(o.agentId);
    where.push(`kind = 'local' AND agent_id = $${params.length}`);
  }
  if (o.mountIds) {
    params.push([...o.mountIds]);
    where.push(`id = ANY ($${params.length}::uuid[])`);
  }
  const { rows } = await q.query<{ key: string; seconds: number }>(
    `SELECT key, greatest(0, extract(epoch FROM now() - coalesce(audited_at, created_at)))::float8 AS seconds
       FROM filestore.mounts WHERE state = 'active' ${where.map((w) => `AND ${w}`).join(' ')} ORDER BY key`,
    params,
  );
  return rows;
}
