-- Up Migration
-- Snapshots record the node row as to_jsonb writes it (column names as keys): building the
-- API's camelCase document (filestore.node_state) on every write cost ~15 µs a row, a third of
-- a discovery's insert. The document is built when a snapshot is read (catalogue/rows.ts
-- SNAPSHOT_STATE_READ); rows written before this migration hold it already and are read as is.
COMMENT ON COLUMN filestore.snapshots.state IS
  'The node row after the change: to_jsonb(nodes row) (column names), or, in rows written before migration 1700000000020, filestore.node_state''s document. Read as the API shows it with: CASE WHEN state ? ''mount_id'' THEN filestore.node_state(jsonb_populate_record(NULL::filestore.nodes, state)) ELSE state END';

-- Down Migration
COMMENT ON COLUMN filestore.snapshots.state IS NULL;
