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

-- Children in name order, live or not: also serves the parent_id foreign key, which a
-- partial index cannot (without it, deleting node rows scans the table once per row).
DROP INDEX filestore.nodes_live_children;
CREATE INDEX nodes_children ON filestore.nodes (parent_id, name);

-- Down Migration
DROP INDEX filestore.nodes_children;
CREATE INDEX nodes_live_children ON filestore.nodes (parent_id, name) WHERE deleted_at IS NULL;
DROP FUNCTION filestore.lock_paths_for(bigint[], boolean[], uuid, text[]);
DROP FUNCTION filestore.lock_entry(bigint);
