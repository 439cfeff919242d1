-- Up Migration
-- begin_command reads the live nodes of a command's paths and their ancestors by one index
-- lookup per path (mount_id, path: nodes_live_path), whatever the table's statistics say.
-- Before, `path = ANY(p_lookup)` let the planner, on a nodes table never analyzed (a new
-- catalogue; autovacuum off or not yet run), scan the index by mount_id alone and filter every
-- live node of the mount: each command cost O(nodes of the mount) (issue 17: ~1,400 buffer
-- hits per write after 2,000 writes). The LIMIT keeps the lookup a parameterized index scan
-- (a subquery with a LIMIT is not flattened into a join the planner could turn around).
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
    'nodes', coalesce((SELECT jsonb_agg(filestore.node_state(n.node))
                         FROM unnest(p_lookup) AS l(path)
                         CROSS JOIN LATERAL (SELECT x AS node FROM filestore.nodes x
                                              WHERE x.mount_id = p_mount AND x.path = l.path AND x.deleted_at IS NULL
                                              LIMIT 1) n), '[]'::jsonb));
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
