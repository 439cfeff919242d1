import type { Queryable } from '../db/pool.ts';

/**
 * The BullMQ prefix of a catalogue's queues: `filestore:<catalogue id>` (the id in
 * `filestore.catalogue`, migration 1700000000006), unless FILESTORE_QUEUE_PREFIX says
 * otherwise. Every producer and consumer of one catalogue — API, agent, reconcile worker,
 * audit scheduler, command dispatch — reads the same row, so they agree; two catalogues on
 * one Redis database never share a queue: no job id deduplicated against the other's, no
 * job taken by the other's consumer. Queue names stay those of SPEC §6 inside the prefix.
 */
export async function catalogueQueuePrefix(q: Queryable): Promise<string> {
  const { rows } = await q.query<{ id: string }>('SELECT filestore.catalogue_id()::text AS id');
  const id = rows[0]?.id;
  if (!id) throw new Error('the catalogue has no identity row (filestore.catalogue): run the migrations');
  return `filestore:${id}`;
}

/** What FILESTORE_QUEUE_PREFIX accepts: a BullMQ key prefix (no spaces; `:` and `{…}` hash tags allowed). */
export const QUEUE_PREFIX_PATTERN = /^[A-Za-z0-9_.:{}-]{1,100}$/;
