-- Up Migration
-- Snapshots record the node row itself, in a column of the nodes table's row type: a copy of
-- the tuple, where to_jsonb built a document of its 22 columns (~10 µs a row, a quarter of
-- PostgreSQL's time for a discovered node; 100k rows: ~1.1 s -> ~0.1 s, 745 -> ~220 bytes a
-- row). Read as the API shows it through filestore.node_state (catalogue/rows.ts
-- SNAPSHOT_STATE_READ). Rows written before keep `state` (to_jsonb of the row, or, before
-- migration 1700000000020, node_state's document) and are read as before.
-- The column ties snapshots to the row type of filestore.nodes. PostgreSQL then refuses any
-- ALTER TABLE of nodes that fills or rewrites its rows ("cannot alter table "nodes" because
-- column "snapshots.node_row" uses its row type"), whatever node_row holds: ADD COLUMN with a
-- DEFAULT (NOT NULL DEFAULT, identity, serial) and ALTER COLUMN ... TYPE. ADD COLUMN without a
-- default and DROP COLUMN work (older records read a new column as NULL). A later migration of
-- nodes therefore either adds its column without a default, then SET DEFAULT and fills the rows
-- with an UPDATE, or, in its transaction, first moves the records aside: UPDATE snapshots SET
-- state = to_jsonb(node_row) WHERE state IS NULL (read as before), DROP COLUMN node_row, makes
-- its change, and ADDs node_row back with the CHECK below (the DROP took it): the steps are
-- tests/snapshot-row-type.test.ts's; docs/architecture.md says the same.
ALTER TABLE filestore.snapshots ADD COLUMN node_row filestore.nodes;
ALTER TABLE filestore.snapshots ALTER COLUMN state DROP NOT NULL;
-- NOT VALID: every row written before holds state (NOT NULL until now); no scan under the lock.
ALTER TABLE filestore.snapshots ADD CONSTRAINT snapshots_recorded CHECK (state IS NOT NULL OR (node_row).id IS NOT NULL) NOT VALID;
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
