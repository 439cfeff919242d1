-- Up Migration
-- Directory rollups count what is present on storage (issue 16, item 8): the live nodes that
-- are not MISSING (shared/catalogue/rollups.ts). Before, MISSING nodes were counted. The
-- rollups of the directories above a MISSING node (the only ones the rule changes) are
-- recomputed from the rows, their pending deltas dropped, as recomputeRollups does.
WITH missing AS (
  SELECT mount_id, path FROM filestore.nodes
   WHERE deleted_at IS NULL AND consistency_state <> 'ACTIVE' AND consistency_state = 'MISSING'
), above AS (
  SELECT mount_id, '' AS path FROM missing
  UNION
  SELECT m.mount_id, left(m.path, pos - 1) FROM missing m, generate_series(1, length(m.path)) AS pos
   WHERE substr(m.path, pos, 1) = '/'
), dirs AS (
  SELECT d.id, d.mount_id, d.path FROM above
    JOIN filestore.nodes d ON d.mount_id = above.mount_id AND d.path = above.path AND d.deleted_at IS NULL AND d.kind = 'directory'
), totals AS (
  SELECT dirs.id, dirs.mount_id,
         coalesce(sum(c.size_bytes) FILTER (WHERE c.kind = 'file'), 0) AS size_bytes,
         count(c.id) FILTER (WHERE c.kind = 'file') AS file_count,
         count(c.id) FILTER (WHERE c.kind = 'directory') AS dir_count,
         count(c.id) FILTER (WHERE c.parent_id = dirs.id) AS child_count
    FROM dirs
    LEFT JOIN filestore.nodes c
      ON c.mount_id = dirs.mount_id AND c.deleted_at IS NULL AND c.consistency_state <> 'MISSING'
     AND CASE WHEN dirs.path = '' THEN c.path <> ''
              ELSE c.path >= dirs.path || '/' AND c.path < dirs.path || '0' END
   GROUP BY dirs.id, dirs.mount_id
), gone AS (
  DELETE FROM filestore.rollup_deltas WHERE node_id IN (SELECT id FROM dirs)
)
INSERT INTO filestore.rollups (node_id, mount_id, size_bytes, file_count, dir_count, child_count, last_calculated_at)
SELECT id, mount_id, size_bytes, file_count, dir_count, child_count, now() FROM totals
ON CONFLICT (node_id) DO UPDATE SET size_bytes = EXCLUDED.size_bytes, file_count = EXCLUDED.file_count,
  dir_count = EXCLUDED.dir_count, child_count = EXCLUDED.child_count, last_calculated_at = now();

-- Down Migration
-- Back to counting MISSING nodes: the same directories recomputed with them.
WITH missing AS (
  SELECT mount_id, path FROM filestore.nodes
   WHERE deleted_at IS NULL AND consistency_state <> 'ACTIVE' AND consistency_state = 'MISSING'
), above AS (
  SELECT mount_id, '' AS path FROM missing
  UNION
  SELECT m.mount_id, left(m.path, pos - 1) FROM missing m, generate_series(1, length(m.path)) AS pos
   WHERE substr(m.path, pos, 1) = '/'
), dirs AS (
  SELECT d.id, d.mount_id, d.path FROM above
    JOIN filestore.nodes d ON d.mount_id = above.mount_id AND d.path = above.path AND d.deleted_at IS NULL AND d.kind = 'directory'
), totals AS (
  SELECT dirs.id, dirs.mount_id,
         coalesce(sum(c.size_bytes) FILTER (WHERE c.kind = 'file'), 0) AS size_bytes,
         count(c.id) FILTER (WHERE c.kind = 'file') AS file_count,
         count(c.id) FILTER (WHERE c.kind = 'directory') AS dir_count,
         count(c.id) FILTER (WHERE c.parent_id = dirs.id) AS child_count
    FROM dirs
    LEFT JOIN filestore.nodes c
      ON c.mount_id = dirs.mount_id AND c.deleted_at IS NULL
     AND CASE WHEN dirs.path = '' THEN c.path <> ''
              ELSE c.path >= dirs.path || '/' AND c.path < dirs.path || '0' END
   GROUP BY dirs.id, dirs.mount_id
), gone AS (
  DELETE FROM filestore.rollup_deltas WHERE node_id IN (SELECT id FROM dirs)
)
INSERT INTO filestore.rollups (node_id, mount_id, size_bytes, file_count, dir_count, child_count, last_calculated_at)
SELECT id, mount_id, size_bytes, file_count, dir_count, child_count, now() FROM totals
ON CONFLICT (node_id) DO UPDATE SET size_bytes = EXCLUDED.size_bytes, file_count = EXCLUDED.file_count,
  dir_count = EXCLUDED.dir_count, child_count = EXCLUDED.child_count, last_calculated_at = now();
