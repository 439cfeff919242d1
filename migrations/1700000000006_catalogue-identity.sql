-- Up Migration
-- The catalogue's identity: one row, a uuid made here. It names what this catalogue keeps
-- outside PostgreSQL — its BullMQ queues (prefix `filestore:<id>`, shared/queues/prefix.ts) —
-- so two catalogues on one Redis (a test and a bench database, two deployments) never share
-- a queue, a job id or a consumer.
--
-- A copy of the database is another catalogue: the row remembers the database oid and the
-- server's system identifier it was made under, and filestore.catalogue_id() gives the
-- catalogue a new id when they no longer match (CREATE DATABASE … TEMPLATE, a dump restored
-- into another database or server). A physical copy (base backup, PITR, a promoted standby)
-- keeps both and therefore the id: run it beside the original only with its own
-- FILESTORE_QUEUE_PREFIX.
CREATE TABLE filestore.catalogue (
  singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  id                 uuid NOT NULL DEFAULT gen_random_uuid(),
  database_oid       oid NOT NULL,
  -- null where pg_control_system() is not allowed (then only the oid is compared)
  system_identifier  bigint,
  created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION filestore.server_identifier() RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
  RETURN (SELECT system_identifier FROM pg_control_system());
EXCEPTION WHEN insufficient_privilege THEN
  RETURN NULL;
END;
$$;

INSERT INTO filestore.catalogue (database_oid, system_identifier)
SELECT oid, filestore.server_identifier() FROM pg_database WHERE datname = current_database();

-- The catalogue's id, renewed first if this database is a copy (see above). Concurrent first
-- calls on a copy agree: the second UPDATE waits for the first, finds the row matching and
-- changes nothing, and its SELECT (a new snapshot) reads the first one's id.
CREATE FUNCTION filestore.catalogue_id() RETURNS uuid
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  db   oid := (SELECT oid FROM pg_database WHERE datname = current_database());
  sys  bigint := filestore.server_identifier();
  cid  uuid;
BEGIN
  UPDATE filestore.catalogue
     SET id = gen_random_uuid(), database_oid = db, system_identifier = sys, created_at = now()
   WHERE database_oid <> db
      OR (sys IS NOT NULL AND system_identifier IS NOT NULL AND system_identifier <> sys)
  RETURNING id INTO cid;
  IF cid IS NULL THEN
    INSERT INTO filestore.catalogue (database_oid, system_identifier) VALUES (db, sys)
    ON CONFLICT (singleton) DO NOTHING;
    SELECT id INTO cid FROM filestore.catalogue;
  END IF;
  RETURN cid;
END;
$$;

-- Down Migration
DROP FUNCTION filestore.catalogue_id();
DROP TABLE filestore.catalogue;
DROP FUNCTION filestore.server_identifier();
