-- Up Migration
-- Reconciliation: job coalescing, resumable audits, mount health.

-- While a job waits, a second request for the same (mount, path) joins it instead of
-- queuing another: one waiting row per (mount, path). Running and finished jobs do not
-- count, so a failed or running job never blocks a later one.
CREATE UNIQUE INDEX reconciliation_jobs_waiting ON filestore.reconciliation_jobs (mount_id, path)
  WHERE status = 'queued';

ALTER TABLE filestore.reconciliation_jobs
  -- requests merged into this job while it waited
  ADD COLUMN coalesced   integer NOT NULL DEFAULT 0,
  -- where an interrupted audit continues (S3: the listing's continuation point)
  ADD COLUMN checkpoint  jsonb,
  ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();

CREATE INDEX reconciliation_jobs_recent ON filestore.reconciliation_jobs (id DESC);

-- A mount whose root is gone or unreadable is reported unhealthy, never emptied.
ALTER TABLE filestore.mounts
  ADD COLUMN health            text NOT NULL DEFAULT 'unknown' CHECK (health IN ('unknown', 'healthy', 'unhealthy')),
  ADD COLUMN health_reason     text,
  ADD COLUMN health_checked_at timestamptz;

-- Down Migration
ALTER TABLE filestore.mounts DROP COLUMN health_checked_at, DROP COLUMN health_reason, DROP COLUMN health;
DROP INDEX filestore.reconciliation_jobs_recent;
ALTER TABLE filestore.reconciliation_jobs DROP COLUMN updated_at, DROP COLUMN checkpoint, DROP COLUMN coalesced;
DROP INDEX filestore.reconciliation_jobs_waiting;
