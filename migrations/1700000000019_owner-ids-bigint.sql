-- Up Migration
-- A node's uid and gid as bigint: Linux's ids are unsigned 32-bit (an NFS "nobody" is
-- 4294967294; directory services map users to large ids), and an integer column refused
-- every id beyond 2^31 - 1 — with it the whole batch that held such a file, so an audit of a
-- tree with one failed. Rewrites the nodes table once (ACCESS EXCLUSIVE for its length).
ALTER TABLE filestore.nodes ALTER COLUMN uid TYPE bigint, ALTER COLUMN gid TYPE bigint;

-- Down Migration
