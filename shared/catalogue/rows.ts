import type { CatalogueNode, Mount } from './types.ts';

/** Column list shared by every node query, aliased to the camelCase API shape. */
export const NODE_COLUMNS = `id, mount_id AS "mountId", path, parent_id AS "parentId", name, kind,
  size_bytes AS "sizeBytes", sha256, etag, sequencer, mode, uid, gid, mtime, version,
  consistency_state AS "consistencyState", consistency_checked_at AS "consistencyCheckedAt",
  last_drift_detected_at AS "lastDriftDetectedAt", last_reconciled_at AS "lastReconciledAt",
  deleted_at AS "deletedAt", metadata, created_at AS "createdAt", updated_at AS "updatedAt"`;

export const MOUNT_COLUMNS = `id, key, kind, root_path AS "rootPath", bucket, prefix, region, endpoint,
  agent_id AS "agentId", access_mode AS "accessMode", state, health, health_reason AS "healthReason",
  health_checked_at AS "healthCheckedAt", created_at AS "createdAt", updated_at AS "updatedAt"`;

export type NodeRow = CatalogueNode;
export type MountRow = Mount;

const NODE_DATES = ['mtime', 'consistencyCheckedAt', 'lastDriftDetectedAt', 'lastReconciledAt', 'deletedAt', 'createdAt', 'updatedAt'] as const;

/** A node from filestore.node_state() JSON, with its timestamps as Dates again. */
export function reviveNode(json: Record<string, unknown>): CatalogueNode {
  const node = { ...json } as Record<string, unknown>;
  for (const k of NODE_DATES) if (typeof node[k] === 'string') node[k] = new Date(node[k] as string);
  return node as unknown as CatalogueNode;
}
