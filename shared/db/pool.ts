import pg from 'pg';

// bigint columns (ids, sizes) come back as JS numbers: catalogue ids and byte counts stay far
// below 2^53, and numbers keep every caller free of string/number confusion.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;
export type Queryable = Pick<pg.PoolClient, 'query'>;

export function createPool(connectionString: string, max = 20): pg.Pool {
  // A command holds one connection for its whole run; waiting longer than this for one means
  // the pool is too small for the load, which should surface as an error, not a hang.
  const pool = new pg.Pool({
    connectionString,
    max,
    // PGAPPNAME names a process's sessions (operators, and tests that must find a dead one's).
    application_name: process.env.PGAPPNAME ?? 'filestore',
    connectionTimeoutMillis: 60_000,
    // Our statements are index lookups whose plan never depends on the values; planning them
    // anew at every execution (PostgreSQL's default for the first runs and whenever a custom
    // plan looks cheaper) cost more than executing them. The rule that comes with it: write
    // queries whose generic plan is good — no "$n IS NULL OR …" conditions, enum filters
    // inlined (see catalogue/nodes.ts).
    options: '-c plan_cache_mode=force_generic_plan',
  });
  // A connection lost to a server restart or shutdown must not crash the process: idle
  // clients report through the pool, busy ones through their pending query's rejection.
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

/**
 * Runs `fn` in one transaction on `client`; rolls back on any error. `commitSql` may append
 * parameterless statements to the COMMIT (sent as one simple query: one round trip).
 */
export async function inTransaction<T>(client: pg.PoolClient, fn: () => Promise<T>, commitSql = 'COMMIT'): Promise<T> {
  await client.query('BEGIN');
  try {
    const out = await fn();
    await client.query(commitSql);
    return out;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}
