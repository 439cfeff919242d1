-- Up Migration
-- The catalogue: SPEC §3. Every path column is COLLATE "C" so ordering and prefix ranges
-- follow UTF-8 byte order, the order S3 lists keys in.

CREATE SCHEMA IF NOT EXISTS filestore;

CREATE TABLE filestore.mounts (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  key          text NOT NULL UNIQUE CHECK (key ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  kind         text NOT NULL CHECK (kind IN ('local', 's3')),
  root_path    text,
  bucket       text,
  prefix       text NOT NULL DEFAULT '',
  region       text,
  endpoint     text,
  agent_id     text,
  access_mode  text NOT NULL DEFAULT 'rw' CHECK (access_mode IN ('rw', 'ro')),
  state        text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'local' AND root_path IS NOT NULL) OR (kind = 's3' AND bucket IS NOT NULL))
);

CREATE TABLE filestore.nodes (
  id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  mount_id                uuid NOT NULL REFERENCES filestore.mounts (id) ON DELETE CASCADE,
  path                    text COLLATE "C" NOT NULL,
  parent_id               bigint REFERENCES filestore.nodes (id),
  name                    text COLLATE "C" NOT NULL,
  kind                    text NOT NULL CHECK (kind IN ('file', 'directory', 'symlink')),
  size_bytes              bigint NOT NULL DEFAULT 0,
  sha256                  text,
  etag                    text,
  sequencer               text,
  mode                    integer,
  uid                     integer,
  gid                     integer,
  mtime                   timestamptz,
  version                 integer NOT NULL DEFAULT 1,
  consistency_state       text NOT NULL DEFAULT 'ACTIVE'
                          CHECK (consistency_state IN ('ACTIVE', 'INCONSISTENT', 'MISSING')),
  consistency_checked_at  timestamptz,
  last_drift_detected_at  timestamptz,
  last_reconciled_at      timestamptz,
  deleted_at              timestamptz,
  metadata                jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now()
);

-- One live row per path; tombstones never block a path. Serves by-path lookups and, because
-- path is COLLATE "C", byte-order listing and prefix range scans of a mount.
CREATE UNIQUE INDEX nodes_live_path ON filestore.nodes (mount_id, path) WHERE deleted_at IS NULL;
-- Children of a directory in name order.
CREATE INDEX nodes_live_children ON filestore.nodes (parent_id, name) WHERE deleted_at IS NULL;
-- "All non-ACTIVE nodes of a mount": small, because almost every node is ACTIVE.
CREATE INDEX nodes_not_active ON filestore.nodes (mount_id, consistency_state, path)
  WHERE consistency_state <> 'ACTIVE' AND deleted_at IS NULL;

-- The node as the API shows it (camelCase); snapshots and event payloads record this shape.
CREATE FUNCTION filestore.node_state(n filestore.nodes) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object(
    'id', n.id, 'mountId', n.mount_id, 'path', n.path, 'parentId', n.parent_id, 'name', n.name,
    'kind', n.kind, 'sizeBytes', n.size_bytes, 'sha256', n.sha256, 'etag', n.etag,
    'sequencer', n.sequencer, 'mode', n.mode, 'uid', n.uid, 'gid', n.gid, 'mtime', n.mtime,
    'version', n.version, 'consistencyState', n.consistency_state,
    'consistencyCheckedAt', n.consistency_checked_at, 'lastDriftDetectedAt', n.last_drift_detected_at,
    'lastReconciledAt', n.last_reconciled_at, 'deletedAt', n.deleted_at, 'metadata', n.metadata,
    'createdAt', n.created_at, 'updatedAt', n.updated_at)
$$;

CREATE TABLE filestore.journal_entries (
  id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  mount_id            uuid NOT NULL REFERENCES filestore.mounts (id) ON DELETE CASCADE,
  command             text NOT NULL
                      CHECK (command IN ('mkdir', 'writeFile', 'move', 'copy', 'delete', 'updateMetadata')),
  status              text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
  idempotency_key     text,
  request_fingerprint text,
  request             jsonb NOT NULL,
  result              jsonb,
  error               jsonb,
  principal           text,
  correlation_id      text,
  recovered           boolean NOT NULL DEFAULT false,
  created_at          timestamptz NOT NULL DEFAULT now(),
  started_at          timestamptz NOT NULL DEFAULT now(),
  finished_at         timestamptz
);
CREATE UNIQUE INDEX journal_idempotency ON filestore.journal_entries (idempotency_key)
  WHERE idempotency_key IS NOT NULL;
CREATE INDEX journal_by_mount ON filestore.journal_entries (mount_id, id);
CREATE INDEX journal_pending ON filestore.journal_entries (id) WHERE status = 'pending';

CREATE TABLE filestore.snapshots (
  node_id           bigint NOT NULL REFERENCES filestore.nodes (id) ON DELETE CASCADE,
  version           integer NOT NULL,
  journal_entry_id  bigint REFERENCES filestore.journal_entries (id),
  reconciliation_job_id bigint,
  state             jsonb NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (node_id, version)
);

-- Per directory: recursive totals and the direct child count. Commands never update these
-- rows in place (that would make every write in a mount queue on the root's row); they
-- append to rollup_deltas, and readers add the deltas. compactRollups folds them in.
CREATE TABLE filestore.rollups (
  node_id             bigint PRIMARY KEY REFERENCES filestore.nodes (id) ON DELETE CASCADE,
  mount_id            uuid NOT NULL REFERENCES filestore.mounts (id) ON DELETE CASCADE,
  size_bytes          bigint NOT NULL DEFAULT 0,
  file_count          bigint NOT NULL DEFAULT 0,
  dir_count           bigint NOT NULL DEFAULT 0,
  child_count         bigint NOT NULL DEFAULT 0,
  last_calculated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE filestore.rollup_deltas (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  node_id      bigint NOT NULL REFERENCES filestore.nodes (id) ON DELETE CASCADE,
  size_bytes   bigint NOT NULL,
  file_count   bigint NOT NULL,
  dir_count    bigint NOT NULL,
  child_count  bigint NOT NULL
);
CREATE INDEX rollup_deltas_node ON filestore.rollup_deltas (node_id);

CREATE TABLE filestore.reconciliation_jobs (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  mount_id     uuid NOT NULL REFERENCES filestore.mounts (id) ON DELETE CASCADE,
  path         text COLLATE "C" NOT NULL DEFAULT '',
  reason       text NOT NULL CHECK (reason IN ('drift', 'audit', 'manual', 's3_event', 'recovery')),
  options      jsonb NOT NULL DEFAULT '{}'::jsonb,
  status       text NOT NULL DEFAULT 'queued'
               CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  attempts     integer NOT NULL DEFAULT 0,
  result       jsonb,
  error        jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  started_at   timestamptz,
  finished_at  timestamptz
);
CREATE INDEX reconciliation_jobs_by_mount ON filestore.reconciliation_jobs (mount_id, id);
CREATE INDEX reconciliation_jobs_open ON filestore.reconciliation_jobs (status)
  WHERE status IN ('queued', 'running');

-- Events written in the transaction of the change they describe. txid lets the relay
-- publish only rows no still-running transaction can precede; seq is assigned at
-- publication by the single relay, so it only grows: consumers resume with seq > last.
CREATE TABLE filestore.outbox (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id      uuid NOT NULL DEFAULT gen_random_uuid(),
  mount_id      uuid NOT NULL,
  type          text NOT NULL,
  occurred_at   timestamptz NOT NULL DEFAULT now(),
  data          jsonb NOT NULL,
  txid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
  seq           bigint UNIQUE,
  published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON filestore.outbox (id) WHERE published_at IS NULL;
CREATE SEQUENCE filestore.outbox_seq;

-- Takes session advisory locks in the order given (callers sort keys, so two commands
-- never wait on each other in a cycle), shared or exclusive per key, in one round trip.
CREATE FUNCTION filestore.lock_paths(keys bigint[], exclusive boolean[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
    IF exclusive[i] THEN
      PERFORM pg_advisory_lock(keys[i]);
    ELSE
      PERFORM pg_advisory_lock_shared(keys[i]);
    END IF;
  END LOOP;
END
$$;

-- Down Migration
DROP SCHEMA filestore CASCADE;
