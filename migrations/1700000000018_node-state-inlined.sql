-- Up Migration
-- filestore.node_state (the snapshot of a node, migration 0) was declared IMMUTABLE, but its
-- body is only STABLE (timestamptz to jsonb reads TimeZone): PostgreSQL does not inline a SQL
-- function whose body is more volatile than its declaration, so every snapshot paid a SQL
-- function call, ~11 µs a row (a third of a discovered node's snapshot-and-event cost).
-- Declared STABLE, with the same body, it is inlined into the statements that write snapshots:
-- the same JSON, ~30 % cheaper. Nothing indexes or constrains on it (no IMMUTABLE use).
CREATE OR REPLACE FUNCTION filestore.node_state(n filestore.nodes) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', n.id, 'mountId', n.mount_id, 'path', n.path, 'parentId', n.parent_id, 'name', n.name,
    'kind', n.kind, 'sizeBytes', n.size_bytes, 'sha256', n.sha256, 'etag', n.etag,
    'sequencer', n.sequencer, 'mode', n.mode, 'uid', n.uid, 'gid', n.gid, 'mtime', n.mtime,
    'version', n.version, 'consistencyState', n.consistency_state,
    'consistencyCheckedAt', n.consistency_checked_at, 'lastDriftDetectedAt', n.last_drift_detected_at,
    'lastReconciledAt', n.last_reconciled_at, 'deletedAt', n.deleted_at, 'metadata', n.metadata,
    'createdAt', n.created_at, 'updatedAt', n.updated_at)
$$;

-- Down Migration
CREATE OR REPLACE FUNCTION filestore.node_state(n filestore.nodes) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object(
    'id', n.id, 'mountId', n.mount_id, 'path', n.path, 'parentId', n.parent_id, 'name', n.name,
    'kind', n.kind, 'sizeBytes', n.size_bytes, 'sha256', n.sha256, 'etag', n.etag,
    'sequencer', n.sequencer, 'mode', n.mode, 'uid', n.uid, 'gid', n.gid, 'mtime', n.mtime,
    'version', n.version, 'consistencyState', n.consistency_state,
    'consistencyCheckedAt', n.consistency_checked_at, 'lastDriftDetectedAt', n.last_drift_detected_at,
    'lastReconciledAt', n.last_reconciled_at, 'deletedAt', n.deleted_at, 'metadata', n.metadata,
    'createdAt', n.created_at, 'updatedAt', n.updated_at)
$$;
