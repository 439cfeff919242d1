-- Up Migration
-- A complete audit checks every node of its mount. Instead of rewriting
-- consistency_checked_at on every row it found unchanged (a dead tuple per node per audit),
-- it records when it began on the mount: a node's consistency_checked_at, as read, is the
-- later of its own and this (shared/catalogue/rows.ts).
ALTER TABLE filestore.mounts ADD COLUMN audited_at timestamptz;

-- Recent deletions by path and time: what discovery checks so it never resurrects a node a
-- command deleted while the scan ran (the live-path index holds live rows only).
CREATE INDEX nodes_tombstones ON filestore.nodes (mount_id, deleted_at) WHERE deleted_at IS NOT NULL;

-- Down Migration
DROP INDEX filestore.nodes_tombstones;
ALTER TABLE filestore.mounts DROP COLUMN audited_at;
