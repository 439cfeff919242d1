/**
 * What autovacuum does for the catalogue, done by Filestore's maintenance pass when autovacuum
 * does not (off, as on the machines here, or far behind): the product must not depend on it.
 *
 * Without it, two things decay as the tables churn. Dead rows stay: the queue-like tables
 * (jobs, journal, outbox, rollup deltas) and the nodes every audit touches fill with row
 * versions and index entries no one sees, and a partial index over "open" rows (the open-jobs
 * index) keeps an entry for every job that was ever open. And statistics go stale or never
 * exist: the planner then takes such an index, empty to its eyes, and walks every entry (an
 * S3-event batch of ten keys came to cost as much as the jobs' whole history; the bench's
 * batch took 49 ms before an ANALYZE, 27 ms after).
 *
 * The thresholds are above autovacuum's defaults (vacuum at 20 % dead + 50 rows, analyze at
 * 10 % changed + 50), so where autovacuum keeps up this finds nothing to do.
 */
import type { Pool } from '../db/pool.ts';

/**
 * The tables kept current. Their statistics, all of them. VACUUM, only the queue-like ones:
 * the outbox and the rollup deltas are bounded by retention and compaction; the jobs and the
 * journal keep their history (removed with their mount), so theirs grows with it, but is
 * vacuumed only once its dead rows reach half the live ones (as autovacuum's scale factor
 * does). The nodes and their snapshots are analysed only, their dead rows left to autovacuum.
 * A manual VACUUM or ANALYZE does not step aside for a waiting lock as autovacuum does: a
 * migration's ALTER would wait behind it, and every query behind the ALTER. So the upkeep
 * holds the migrations' advisory lock shared while it works and skips its pass when a
 * migration holds it (migrations then wait on the advisory lock, not on a table's).
 */
const KEPT_TABLES = ['nodes', 'snapshots', 'reconciliation_jobs', 'journal_entries', 'outbox', 'rollup_deltas', 'rollups'] as const;
const VACUUMED_TABLES: ReadonlySet<string> = new Set(['reconciliation_jobs', 'journal_entries', 'outbox', 'rollup_deltas', 'rollups']);

/** VACUUM (ANALYZE) when dead rows reach this share of the live ones (and VACUUM_MIN_DEAD). */
export const VACUUM_SHARE = 0.5;
export const VACUUM_MIN_DEAD = 1_000;
/** ANALYZE when rows changed since the last one reach this share of the table (and ANALYZE_MIN_CHANGED). */
export const ANALYZE_SHARE = 0.2;
export const ANALYZE_MIN_CHANGED = 1_000;

/** One process at a time (session advisory lock; the others skip the step). */
export const UPKEEP_LOCK = 4_242_007;
/** shared/db/migrate.ts's lock, held shared while the upkeep works (see KEPT_TABLES). */
const MIGRATE_LOCK = 4_242_001;

export interface UpkeepReport {
  /** Tables vacuumed (with their statistics), each with the dead rows it had. */
  vacuumed: Array<{ table: string; deadRows: number }>;
  /** Tables whose statistics alone were renewed, each with the rows changed since the last. */
  analyzed: Array<{ table: string; changedRows: number }>;
  /** Tables left for the next pass (a lock not granted within the timeout: another VACUUM, a migration). */
  skipped: string[];
}

interface TableState {
  table: string;
  live: number;
  dead: number;
  changed: number;
}

/**
 * VACUUM (ANALYZE) the queue-like tables whose dead rows reached VACUUM_SHARE of the live ones, and
 * ANALYZE those changed by ANALYZE_SHARE since their statistics, one by one on one connection
 * of the pool, each giving up after `lockTimeoutMs` if it cannot have its lock (VACUUM and
 * ANALYZE take SHARE UPDATE EXCLUSIVE: reads and writes go on meanwhile), and none started or
 * left running past `deadline` (epoch ms: a Lambda's time; those tables are `skipped`).
 * Nothing when another process is doing it or a migration runs.
 */
export async function upkeepCatalogue(pool: Pool, o: { lockTimeoutMs?: number; deadline?: number | undefined } = {}): Promise<UpkeepReport> {
  const report: UpkeepReport = { vacuumed: [], analyzed: [], skipped: [] };
  const client = await pool.connect();
  let locked = false;
  let migrationsHeld = false;
  try {
    const { rows: lock } = await client.query<{ ok: boolean; migrations: boolean }>(
      'SELECT pg_try_advisory_lock($1) AS ok, pg_try_advisory_lock_shared($2) AS migrations',
      [UPKEEP_LOCK, MIGRATE_LOCK],
    );
    locked = lock[0]?.ok === true;
    migrationsHeld = lock[0]?.migrations === true;
    if (!locked || !migrationsHeld) return report;
    const { rows } = await client.query<TableState>(
      `SELECT s.relname AS "table", greatest(s.n_live_tup, c.reltuples, 0)::float8 AS live,
              s.n_dead_tup::float8 AS dead, s.n_mod_since_analyze::float8 AS changed
         FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
        WHERE s.schemaname = 'filestore' AND s.relname = ANY($1::text[])
        ORDER BY s.relname`,
      [KEPT_TABLES],
    );
    await client.query(`SET lock_timeout = ${Math.max(1, Math.floor(o.lockTimeoutMs ?? 2_000))}`);
    for (const t of rows) {
      const vacuum = VACUUMED_TABLES.has(t.table) && t.dead >= Math.max(VACUUM_MIN_DEAD, VACUUM_SHARE * t.live);
      const analyze = !vacuum && t.changed >= Math.max(ANALYZE_MIN_CHANGED, ANALYZE_SHARE * t.live);
      if (!vacuum && !analyze) continue;
      // Within the caller's time (a Lambda's): a statement cut short by it undoes nothing.
      const left = o.deadline === undefined ? null : o.deadline - Date.now();
      if (left !== null && left < 1_000) {
        report.skipped.push(t.table);
        continue;
      }
      if (left !== null) await client.query(`SET statement_timeout = ${Math.floor(left)}`);
      try {
        // Not in a transaction block (VACUUM refuses one): the pool's connections autocommit.
        await client.query(`${vacuum ? 'VACUUM (ANALYZE)' : 'ANALYZE'} filestore.${t.table}`);
        if (vacuum) report.vacuumed.push({ table: t.table, deadRows: t.dead });
        else report.analyzed.push({ table: t.table, changedRows: t.changed });
      } catch (err) {
        // lock_not_available (lock_timeout), query_canceled (statement_timeout: the deadline)
        if (!['55P03', '57014'].includes((err as { code?: string }).code ?? '')) throw err;
        report.skipped.push(t.table);
      }
    }
    return report;
  } finally {
    try {
      await client.query('RESET lock_timeout; RESET statement_timeout');
      if (locked) await client.query('SELECT pg_advisory_unlock($1)', [UPKEEP_LOCK]);
      if (migrationsHeld) await client.query('SELECT pg_advisory_unlock_shared($1)', [MIGRATE_LOCK]);
      client.release();
    } catch (err) {
      client.release(err as Error);
    }
  }
}

/** The report as one log line, or null when nothing was done. */
export function describeUpkeep(r: UpkeepReport): string | null {
  const parts = [
    ...r.vacuumed.map((v) => `VACUUM (ANALYZE) filestore.${v.table} (${v.deadRows.toLocaleString('en-US')} dead rows)`),
    ...r.analyzed.map((a) => `ANALYZE filestore.${a.table} (${a.changedRows.toLocaleString('en-US')} rows changed)`),
    ...r.skipped.map((s) => `filestore.${s} skipped (its lock was not granted; next pass)`),
  ];
  return parts.length === 0 ? null : `catalogue upkeep (autovacuum off or behind): ${parts.join(', ')}`;
}
