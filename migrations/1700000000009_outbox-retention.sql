-- Up Migration
-- Published events are deleted once older than FILESTORE_OUTBOX_RETENTION (the maintenance
-- step, shared/catalogue/outbox-retention.ts). This row records the highest sequence number
-- deleted so far: an event stream asked to resume after an earlier event answers
-- 410 RESUME_POINT_EXPIRED instead of silently skipping what is gone. One row, only growing.
CREATE TABLE filestore.outbox_pruned (
  singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  through_seq bigint NOT NULL DEFAULT 0
);
INSERT INTO filestore.outbox_pruned DEFAULT VALUES;

-- Down Migration
DROP TABLE filestore.outbox_pruned;
