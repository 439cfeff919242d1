-- Up Migration
-- Nodes a full audit found absent from storage in the part of the mount it has scanned so far,
-- saved with each checkpoint (shared/catalogue/audit-candidates.ts). An audit stopped at a
-- checkpoint (a deadline, an abort: the audit Lambda) or interrupted by a failure continues
-- after it later, and the run that completes the scan second-looks and marks these too, so an
-- audit split across many runs ends as one uninterrupted audit does. `version` is the one the
-- audit compared: a node written since is no longer a candidate. Kept as long as the job's
-- checkpoint; deleted when the audit completes, fails or is merged into another job.
CREATE TABLE filestore.audit_missing_candidates (
  job_id   bigint NOT NULL REFERENCES filestore.reconciliation_jobs (id) ON DELETE CASCADE,
  -- No foreign key: reading joins the live node (a node gone is no candidate), and a key on
  -- nodes would make every deletion of nodes (a mount's) look this table up.
  node_id  bigint NOT NULL,
  version  integer NOT NULL,
  PRIMARY KEY (job_id, node_id)
);

-- Down Migration
DROP TABLE filestore.audit_missing_candidates;
