/** Planner statistics kept up with the catalogue: ANALYZE of the tables that changed much since their last one. */
import type { Queryable } from '../db/pool.ts';

/** The tables whose statistics the catalogue's plans lean on (nodes above all). */
const ANALYZED_TABLES = ['nodes', 'rollups', 'rollup_deltas', 'outbox'];

/**
 * ANALYZEs the catalogue's tables that changed by at least `share` of their rows (and at
 * least `minChanged` rows) since their last ANALYZE, one by one; returns the ones it analysed.
 * Reconciliation calls it as it fills or changes the catalogue in bulk (a discovery): the
 * product's plans must not wait for autovacuum, which may be off or far behind, and a plan
 * made when a mount had no rows (its catalogue seen as empty) stays bad as the mount fills.
 * ANALYZE reads a sample (30,000 rows by default) whatever a table's size, and takes a lock
 * that writers do not wait for (SHARE UPDATE EXCLUSIVE).
 */
export async function analyzeIfStale(q: Queryable, o: { share: number; minChanged: number }): Promise<string[]> {
  const { rows } = await q.query<{ name: string }>(
    `SELECT s.relname AS name FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
      WHERE s.schemaname = 'filestore' AND s.relname = ANY($1::text[])
        AND s.n_mod_since_analyze >= greatest($2::float8, $3::float8 * greatest(c.reltuples, 0))`,
    [ANALYZED_TABLES, o.minChanged, o.share],
  );
  for (const { name } of rows) await q.query(`ANALYZE filestore.${name}`);
  return rows.map((r) => r.name);
}
