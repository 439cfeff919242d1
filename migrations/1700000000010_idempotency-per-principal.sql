-- Up Migration
-- An Idempotency-Key belongs to the principal that sent it: another caller using the same key
-- runs its own command instead of receiving (or colliding with) the first caller's result.
-- Entries without a principal (direct calls of the orchestrator) share one scope, ''; token
-- names never are empty.
DROP INDEX filestore.journal_idempotency;
CREATE UNIQUE INDEX journal_idempotency ON filestore.journal_entries (coalesce(principal, ''), idempotency_key)
  WHERE idempotency_key IS NOT NULL;

-- As in migration 2, with the key's uniqueness now per principal.
CREATE OR REPLACE FUNCTION filestore.begin_command(
  p_keys bigint[], p_exclusive boolean[], p_mount uuid, p_paths text[], p_lookup text[], p_command text,
  p_request jsonb, p_idempotency_key text, p_fingerprint text, p_principal text, p_correlation_id text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  stale bigint[];
  entry filestore.journal_entries;
  m filestore.mounts;
BEGIN
  SELECT * INTO m FROM filestore.mounts WHERE id = p_mount;
  IF m.id IS NULL THEN
    RETURN jsonb_build_object('missingMount', true);
  END IF;
  stale := filestore.lock_paths_for(p_keys, p_exclusive, p_mount, p_paths);
  IF array_length(stale, 1) > 0 THEN
    RETURN jsonb_build_object('stale', to_jsonb(stale));
  END IF;
  INSERT INTO filestore.journal_entries
    (mount_id, command, request, idempotency_key, request_fingerprint, principal, correlation_id)
  VALUES (p_mount, p_command, p_request, p_idempotency_key, p_fingerprint, p_principal, p_correlation_id)
  ON CONFLICT (coalesce(principal, ''), idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING * INTO entry;
  IF entry.id IS NULL THEN
    RETURN jsonb_build_object('conflict', true);
  END IF;
  PERFORM filestore.lock_entry(entry.id);
  RETURN jsonb_build_object(
    'entryId', entry.id,
    'mount', jsonb_build_object('accessMode', m.access_mode, 'state', m.state),
    'nodes', coalesce((SELECT jsonb_agg(filestore.node_state(n)) FROM filestore.nodes n
                        WHERE n.mount_id = p_mount AND n.path = ANY(p_lookup) AND n.deleted_at IS NULL), '[]'::jsonb));
END
$$;


-- Down Migration
CREATE OR REPLACE FUNCTION filestore.begin_command(
  p_keys bigint[], p_exclusive boolean[], p_mount uuid, p_paths text[], p_lookup text[], p_command text,
  p_request jsonb, p_idempotency_key text, p_fingerprint text, p_principal text, p_correlation_id text
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  stale bigint[];
  entry filestore.journal_entries;
  m filestore.mounts;
BEGIN
  SELECT * INTO m FROM filestore.mounts WHERE id = p_mount;
  IF m.id IS NULL THEN
    RETURN jsonb_build_object('missingMount', true);
  END IF;
  stale := filestore.lock_paths_for(p_keys, p_exclusive, p_mount, p_paths);
  IF array_length(stale, 1) > 0 THEN
    RETURN jsonb_build_object('stale', to_jsonb(stale));
  END IF;
  INSERT INTO filestore.journal_entries
    (mount_id, command, request, idempotency_key, request_fingerprint, principal, correlation_id)
  VALUES (p_mount, p_command, p_request, p_idempotency_key, p_fingerprint, p_principal, p_correlation_id)
  ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
  RETURNING * INTO entry;
  IF entry.id IS NULL THEN
    RETURN jsonb_build_object('conflict', true);
  END IF;
  PERFORM filestore.lock_entry(entry.id);
  RETURN jsonb_build_object(
    'entryId', entry.id,
    'mount', jsonb_build_object('accessMode', m.access_mode, 'state', m.state),
    'nodes', coalesce((SELECT jsonb_agg(filestore.node_state(n)) FROM filestore.nodes n
                        WHERE n.mount_id = p_mount AND n.path = ANY(p_lookup) AND n.deleted_at IS NULL), '[]'::jsonb));
END
$$;
DROP INDEX filestore.journal_idempotency;
CREATE UNIQUE INDEX journal_idempotency ON filestore.journal_entries (idempotency_key)
  WHERE idempotency_key IS NOT NULL;
