-- Up Migration
-- Fewer round trips per command (each costs more CPU than the work it carries on small files).

-- Marks the calling session as the live owner of a journal entry (two-int4 advisory keyspace,
-- never overlapping the bigint path locks). Used inside the INSERT of the entry, so the lock
-- is held before the row becomes visible to recovery.
CREATE FUNCTION filestore.lock_entry(entry_id bigint) RETURNS boolean
LANGUAGE sql AS $$ SELECT pg_advisory_lock(4242, (entry_id % 2147483647)::int) IS NOT NULL $$;

-- Takes a command's path locks, then returns the pending entries of the mount whose paths
-- overlap the command's (same path, ancestor or descendant): with the locks held, their
-- owners must be dead, and the command resolves them before it starts.
CREATE FUNCTION filestore.lock_paths_for(keys bigint[], exclusive boolean[], mount uuid, paths text[])
RETURNS bigint[] LANGUAGE plpgsql AS $$
BEGIN
  PERFORM filestore.lock_paths(keys, exclusive);
  RETURN ARRAY(
    SELECT j.id FROM filestore.journal_entries j
     WHERE j.status = 'pending' AND j.mount_id = mount
       AND EXISTS (
         SELECT 1 FROM unnest(paths) AS p(path),
                       unnest(ARRAY[j.request->>'path', j.request->>'targetPath']) AS e(path)
          WHERE e.path IS NOT NULL
            AND (e.path = p.path OR p.path = '' OR e.path = ''
                 OR starts_with(e.path, p.path || '/') OR starts_with(p.path, e.path || '/')))
     ORDER BY j.id);
END
$$;

-- Starts a command in one round trip: returns {"missingMount": true} if the mount is gone;
-- takes its path locks; if a crashed command is still
-- pending on an overlapping path, returns {"stale": [ids]} and does nothing else (the caller
-- steps aside, resolves them, and calls again); otherwise journals the command as pending,
-- owned by this session, and returns the entry, the mount's current access mode and state,
-- and the live nodes at `lookup` paths (read under the locks, so prepare needs no query).
CREATE FUNCTION filestore.begin_command(
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

-- Foreign keys on the tables every command appends to cost a key-share lock per row on the
-- referenced row — the mount row and the parent directories are shared by all concurrent
-- commands, so each insert also churns a multixact there. The repositories keep these
-- references consistent (nodes and their history are never deleted, only tombstoned);
-- mounts keep their cascade to rollups and reconciliation jobs.
ALTER TABLE filestore.nodes DROP CONSTRAINT nodes_mount_id_fkey, DROP CONSTRAINT nodes_parent_id_fkey;
ALTER TABLE filestore.snapshots DROP CONSTRAINT snapshots_node_id_fkey, DROP CONSTRAINT snapshots_journal_entry_id_fkey;
ALTER TABLE filestore.journal_entries DROP CONSTRAINT journal_entries_mount_id_fkey;
ALTER TABLE filestore.rollup_deltas DROP CONSTRAINT rollup_deltas_node_id_fkey;

-- Pending entries of one mount in id order (the check above runs on every command). A plain
-- index scan here also marks dead entries of finished commands as it passes them, so the
-- check stays cheap between vacuums, where a bitmap scan over the global pending index
-- would revisit every dead entry each time.
-- It also serves the recovery sweep (all pending entries), so the id-only index goes.
CREATE INDEX journal_pending_by_mount ON filestore.journal_entries (mount_id, id) WHERE status = 'pending';
DROP INDEX filestore.journal_pending;


-- Down Migration
CREATE INDEX journal_pending ON filestore.journal_entries (id) WHERE status = 'pending';
DROP INDEX filestore.journal_pending_by_mount;
ALTER TABLE filestore.rollup_deltas ADD FOREIGN KEY (node_id) REFERENCES filestore.nodes (id) ON DELETE CASCADE;
ALTER TABLE filestore.journal_entries ADD FOREIGN KEY (mount_id) REFERENCES filestore.mounts (id) ON DELETE CASCADE;
ALTER TABLE filestore.snapshots ADD FOREIGN KEY (node_id) REFERENCES filestore.nodes (id) ON DELETE CASCADE,
  ADD FOREIGN KEY (journal_entry_id) REFERENCES filestore.journal_entries (id);
ALTER TABLE filestore.nodes ADD FOREIGN KEY (mount_id) REFERENCES filestore.mounts (id) ON DELETE CASCADE,
  ADD FOREIGN KEY (parent_id) REFERENCES filestore.nodes (id);
DROP FUNCTION filestore.begin_command(bigint[], boolean[], uuid, text[], text[], text, jsonb, text, text, text, text);
DROP FUNCTION filestore.lock_paths_for(bigint[], boolean[], uuid, text[]);
DROP FUNCTION filestore.lock_entry(bigint);
