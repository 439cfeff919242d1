import type { CatalogueNode, Mount } from './types.ts';

/**
 * When a node was last found to match storage: its own mark, or the start of the last
 * complete audit of its mount if later (an audit does not rewrite the rows it finds
 * unchanged; migrations/1700000000005_audit-watermark.sql).
 */
const CHECKED_AT = `GREATEST(consistency_checked_at, (SELECT m.audited_at FROM filestore.mounts m WHERE m.id = mount_id))`;

/** Column list shared by every node query, aliased to the camelCase API shape. */
export const NODE_COLUMNS = `id, mount_id AS "mountId", path, parent_id AS "parentId", name, kind,
  size_bytes AS "sizeBytes", sha256, etag, sequencer, mode, uid, gid, mtime, version,
  consistency_state AS "consistencyState", ${CHECKED_AT} AS "consistencyCheckedAt",
  last_drift_detected_at AS "lastDriftDetectedAt", last_reconciled_at AS "lastReconciledAt",
  deleted_at AS "deletedAt", metadata, created_at AS "createdAt", updated_at AS "updatedAt"`;

export const MOUNT_COLUMNS = `id, key, kind, root_path AS "rootPath", bucket, prefix, region, endpoint,
  agent_id AS "agentId", access_mode AS "accessMode", state, health, health_reason AS "healthReason",
  health_checked_at AS "healthCheckedAt", created_at AS "createdAt", updated_at AS "updatedAt"`;

export type NodeRow = CatalogueNode;
export type MountRow = Mount;

/**
 * What a snapshot records of a node: the row `r` (a statement's CTE returning the whole nodes
 * row, `RETURNING *`) as a value of the nodes table's row type, in column SNAPSHOT_COLUMN:
 * a copy of the tuple. Building the API's camelCase document (filestore.node_state) as rows
 * are written cost ~15 µs a row, `to_jsonb` of the row ~10 (a quarter of a discovered node's
 * time in PostgreSQL); snapshots are written with every change and read rarely, so the
 * document is built when read (SNAPSHOT_STATE_READ). Migration 1700000000021.
 */
export const snapshotState = (r: string): string => `${r}::filestore.nodes`;
export const SNAPSHOT_COLUMN = 'node_row';

/**
 * A snapshot's state as the API shows it: the node_state document of the recorded row. Rows
 * written before migration 1700000000021 hold `state` instead: to_jsonb of the row, or (before
 * 1700000000020) the document itself. A row value IS NOT NULL only when every field is: the
 * record is told by its id.
 */
export const SNAPSHOT_STATE_READ = `CASE WHEN (node_row).id IS NOT NULL THEN filestore.node_state(node_row)
  WHEN state ? 'mount_id' THEN filestore.node_state(jsonb_populate_record(NULL::filestore.nodes, state)) ELSE state END`;

const NODE_DATES = ['mtime', 'consistencyCheckedAt', 'lastDriftDetectedAt', 'lastReconciledAt', 'deletedAt', 'createdAt', 'updatedAt'] as const;

/** A node from filestore.node_state() JSON, with its timestamps as Dates again. */
export function reviveNode(json: Record<string, unknown>): CatalogueNode {
  const node = { ...json } as Record<string, unknown>;
  for (const k of NODE_DATES) if (typeof node[k] === 'string') node[k] = new Date(node[k] as string);
  return node as unknown as CatalogueNode;
}
