-- Up Migration
-- What carries a reconciliation row's queue message, so that each consumer looks after its own
-- rows only: 'redis' — BullMQ on Redis (or the in-process queue of REDIS_URL=inline), consumed
-- by long-running processes (npm start, agents, the reconcile worker), whose resender re-adds
-- open rows it finds without a message; 'sqs' — the SQS reconcile queue and the Lambdas that
-- consume it (S3 mounts in AWS: the reconcile Lambda, the audit Lambda for full audits), whose
-- sweep sends open rows again. A row keeps its transport for its life; a request that joins a
-- waiting row adds no message and leaves it as it is.
--
-- Safe on a big table: a column with a constant default is metadata only (PostgreSQL 11+), and
-- the check is NOT VALID, so nothing scans the table under the ALTER's lock (the migrations
-- run in one transaction, where a VALIDATE would hold it too). Every existing row holds the
-- default, which the check admits; new and updated rows are checked.
ALTER TABLE filestore.reconciliation_jobs
  ADD COLUMN transport text NOT NULL DEFAULT 'redis',
  ADD CONSTRAINT reconciliation_jobs_transport CHECK (transport IN ('redis', 'sqs')) NOT VALID;

-- Down Migration
ALTER TABLE filestore.reconciliation_jobs DROP COLUMN transport;
