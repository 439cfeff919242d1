-- Up Migration
-- Agents (SPEC §1, §6): the on-prem processes that own local mounts. An agent registers at
-- start, heartbeats while it runs and is marked stopped when it shuts down cleanly. Other
-- processes dispatch commands for its mounts (queue filestore-commands-<id>) and redirect
-- file bytes to its `url` only while its heartbeat is fresh: within three intervals.
-- mounts.agent_id is deliberately not a foreign key: a mount may be assigned to an agent
-- before that agent first starts.
CREATE TABLE filestore.agents (
  id                    text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
  host                  text NOT NULL,
  version               text NOT NULL,
  -- where its HTTP server (streamed file routes) is reachable; null: none
  url                   text,
  heartbeat_interval_ms integer NOT NULL CHECK (heartbeat_interval_ms > 0),
  started_at            timestamptz NOT NULL DEFAULT now(),
  heartbeat_at          timestamptz NOT NULL DEFAULT now(),
  stopped_at            timestamptz
);

-- Down Migration
DROP TABLE filestore.agents;
