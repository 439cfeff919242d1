-- Up Migration
-- A reconciliation row whose queue message could not be sent (Redis unreachable when it was
-- recorded) says so, until a process sends it: the BullMQ queue looks up exactly these rows
-- when Redis is back, instead of walking every open row (thousands may wait legitimately, on
-- a backlog or an offline agent's queue, ahead of the ones owed a message).
ALTER TABLE filestore.reconciliation_jobs ADD COLUMN queue_owed boolean NOT NULL DEFAULT false;
-- Empty when nothing is owed: looking costs one index probe.
CREATE INDEX reconciliation_jobs_queue_owed ON filestore.reconciliation_jobs (id) WHERE queue_owed;

-- Down Migration
DROP INDEX filestore.reconciliation_jobs_queue_owed;
ALTER TABLE filestore.reconciliation_jobs DROP COLUMN queue_owed;
