-- Up Migration
-- A removed mount's journal stays (DELETE /v1/mounts/:id, `filestore mounts remove`): its
-- entries keep the id of a mount that is gone, so the journal no longer cascades from mounts.
ALTER TABLE filestore.journal_entries DROP CONSTRAINT IF EXISTS journal_entries_mount_id_fkey;

-- Down Migration
ALTER TABLE filestore.journal_entries ADD FOREIGN KEY (mount_id) REFERENCES filestore.mounts (id) ON DELETE CASCADE NOT VALID;
