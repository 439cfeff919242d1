-- Up Migration
-- Snapshots record the node row itself, in a column of the nodes table's row type: a copy of
-- the tuple, where to_jsonb built a document of its 22 columns (~10 µs a row, a quarter of
-- PostgreSQL's time for a discovered node; 100k rows: ~1.1 s -> ~0.1 s, 745 -> ~220 bytes a
-- row). Read as the API shows it through filestore.node_state (catalogue/rows.ts
-- SNAPSHOT_STATE_READ). Rows written before keep `state` (to_jsonb of the row, or, before
-- migration 1700000000020, node_state's document) and are read as before.
-- The column ties snapshots to the row type of filestore.nodes: adding or dropping a column of
-- nodes is fine (older records read the new column as NULL), but changing a column's type is
-- refused while records hold the type ("column node_row uses its row type"): such a migration
-- first rewrites node_row (e.g. into state as to_jsonb) and restores it after.
ALTER TABLE filestore.snapshots ADD COLUMN node_row filestore.nodes;
ALTER TABLE filestore.snapshots ALTER COLUMN state DROP NOT NULL;
ALTER TABLE filestore.snapshots ADD CONSTRAINT snapshots_recorded CHECK (state IS NOT NULL OR (node_row).id IS NOT NULL);
COMMENT ON COLUMN filestore.snapshots.node_row IS
  'The node row after the change (written since migration 1700000000021; NULL before). Read as the API shows it with filestore.node_state(node_row).';
COMMENT ON COLUMN filestore.snapshots.state IS
  'Rows written before migration 1700000000021 (NULL since): to_jsonb(nodes row), or, before migration 1700000000020, filestore.node_state''s document. Read as the API shows it with: CASE WHEN state ? ''mount_id'' THEN filestore.node_state(jsonb_populate_record(NULL::filestore.nodes, state)) ELSE state END';

-- Down Migration
UPDATE filestore.snapshots SET state = to_jsonb(node_row), node_row = NULL WHERE state IS NULL;
ALTER TABLE filestore.snapshots DROP CONSTRAINT snapshots_recorded;
ALTER TABLE filestore.snapshots ALTER COLUMN state SET NOT NULL;
ALTER TABLE filestore.snapshots DROP COLUMN node_row;
COMMENT ON COLUMN filestore.snapshots.state IS
  'The node row after the change: to_jsonb(nodes row) (column names), or, in rows written before migration 1700000000020, filestore.node_state''s document. Read as the API shows it with: CASE WHEN state ? ''mount_id'' THEN filestore.node_state(jsonb_populate_record(NULL::filestore.nodes, state)) ELSE state END';
