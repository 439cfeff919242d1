-- Up Migration
-- Releases locks taken by filestore.lock_paths (and only those), so a command can step
-- aside while a crashed command on its paths is recovered, keeping its other locks.
CREATE FUNCTION filestore.unlock_paths(keys bigint[], exclusive boolean[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
    IF exclusive[i] THEN
      PERFORM pg_advisory_unlock(keys[i]);
    ELSE
      PERFORM pg_advisory_unlock_shared(keys[i]);
    END IF;
  END LOOP;
END
$$;

-- Down Migration
DROP FUNCTION filestore.unlock_paths(bigint[], boolean[]);
