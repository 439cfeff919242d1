-- Up Migration
-- One live agent per id (issue 13): each agent process registers with a random instance
-- token. Registering takes the id only from a row that is stopped, is this instance's, or has
-- not heartbeated within the lease (an agent killed without stopping); heartbeats and the
-- clean stop touch only the row of their own instance, so a second process with the same id
-- can neither mark the first stopped nor pass for it.
ALTER TABLE filestore.agents ADD COLUMN instance text;

-- Down Migration
ALTER TABLE filestore.agents DROP COLUMN instance;
