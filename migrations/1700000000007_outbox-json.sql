-- Up Migration
-- Event data as json, not jsonb. Nothing queries inside it in SQL: it is written once (the
-- JSON text node serialised), read once by the relay as text and sent to Redis as is. jsonb
-- converted that text into its binary form on every insert and back into text on every claim:
-- ~43 ms and ~20 ms of PostgreSQL per 4,000 events (~2 MB), against ~14 ms and ~14 ms as json
-- (a drift audit of 100k files writes 4,000 events; a discovery of 100k, 100,000). As json the
-- text is kept as written, so Redis and the event stream carry exactly what was serialised.
ALTER TABLE filestore.outbox ALTER COLUMN data TYPE json USING data::json;

-- Down Migration
ALTER TABLE filestore.outbox ALTER COLUMN data TYPE jsonb USING data::jsonb;
