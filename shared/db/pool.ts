import type { ConnectionOptions } from 'node:tls';
import pg from 'pg';
import { FilestoreError } from '../errors.ts';

// bigint columns (ids, sizes) come back as JS numbers: catalogue ids and byte counts stay far
// below 2^53, and numbers keep every caller free of string/number confusion.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;
export type Queryable = Pick<pg.PoolClient, 'query'>;

/** How long a caller waits for a free connection of an exhausted pool before 503 UNAVAILABLE. */
export const DEFAULT_ACQUIRE_TIMEOUT_MS = 10_000;

/**
 * What a connection string cannot carry: a password made anew for each connection (RDS IAM
 * auth tokens live 15 minutes, a pooled connection longer) and TLS options built in code.
 */
export interface ConnectionAuth {
  /** Called by pg for each new connection whose server asks for a password. */
  password?: string | (() => Promise<string>) | undefined;
  /** TLS of every connection; with it, a server that does not offer TLS is refused. */
  ssl?: ConnectionOptions | undefined;
}

export interface PoolOptions extends ConnectionAuth {
  /** Wait at most this long for a connection (default DEFAULT_ACQUIRE_TIMEOUT_MS). */
  acquireTimeoutMs?: number | undefined;
}

// The process that knows a database's credentials (a Lambda with IAM auth) registers them for
// its URL once; every pool and client made for that URL then uses them, wherever it is made
// (wireFilestore, migrate), without each layer passing them along.
const registered = new Map<string, ConnectionAuth>();

/** Registers the password function and TLS options of the connections to `connectionString`. */
export function registerConnectionAuth(connectionString: string, auth: ConnectionAuth): void {
  registered.set(connectionString, auth);
}

/** Forgets what registerConnectionAuth registered for `connectionString` (tests). */
export function unregisterConnectionAuth(connectionString: string): void {
  registered.delete(connectionString);
}

/**
 * The pg settings of a connection to `connectionString`: the URL, and the password and TLS
 * given (else registered for it). Options given win over the URL's (pg lets the URL's win);
 * with them, the URL's query (sslmode…) is not read: TLS is `ssl`.
 */
export function connectionConfig(connectionString: string, auth: ConnectionAuth = {}): pg.ClientConfig {
  const a = { ...registered.get(connectionString), ...definedOnly(auth) };
  const config: pg.ClientConfig = { connectionString };
  if (a.password !== undefined || a.ssl !== undefined) {
    // pg gives a connection string's settings precedence over explicit ones: with options of
    // our own, the URL's parts are passed one by one instead.
    const u = new URL(connectionString);
    Object.assign(config, {
      connectionString: undefined,
      host: decodeURIComponent(u.hostname.replace(/^\[|\]$/g, '')),
      port: u.port ? Number(u.port) : 5432,
      user: decodeURIComponent(u.username) || undefined,
      database: decodeURIComponent(u.pathname.slice(1)) || undefined,
      password: a.password ?? (u.password ? decodeURIComponent(u.password) : undefined),
      ssl: a.ssl,
    });
  }
  return config;
}

function definedOnly(auth: ConnectionAuth): ConnectionAuth {
  const out: ConnectionAuth = {};
  if (auth.password !== undefined) out.password = auth.password;
  if (auth.ssl !== undefined) out.ssl = auth.ssl;
  return out;
}

export function createPool(connectionString: string, max = 20, o: PoolOptions = {}): pg.Pool {
  const acquireTimeoutMs = o.acquireTimeoutMs ?? DEFAULT_ACQUIRE_TIMEOUT_MS;
  const pool = new pg.Pool({
    ...connectionConfig(connectionString, o),
    max,
    // PGAPPNAME names a process's sessions (operators, and tests that must find a dead one's).
    application_name: process.env.PGAPPNAME ?? 'filestore',
    // A command holds one connection for its whole run; waiting long for one means the pool is
    // too small for the load (or held by stuck work), which should surface as a retryable
    // error well within a client's patience, not as a hang.
    connectionTimeoutMillis: acquireTimeoutMs,
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
  reportExhaustion(pool, max, acquireTimeoutMs);
  return pool;
}

type ConnectCallback = (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void;

/**
 * A wait for a connection that timed out becomes 503 UNAVAILABLE with Retry-After (instead of
 * an INTERNAL 500): the request was fine, the process is busy. pool.query connects through
 * pool.connect too, so both are covered.
 */
function reportExhaustion(pool: pg.Pool, max: number, acquireTimeoutMs: number): void {
  const connect = pool.connect.bind(pool) as unknown as (cb?: ConnectCallback) => Promise<pg.PoolClient> | undefined;
  const exhausted = (err: unknown): unknown =>
    err instanceof Error && err.message === 'timeout exceeded when trying to connect'
      ? new FilestoreError(
          'UNAVAILABLE',
          `all ${max} database connections of this process stayed busy for ${acquireTimeoutMs} ms; retry shortly (FILESTORE_DB_POOL_SIZE sets how many there are)`,
          { retryAfterSeconds: 1, resource: 'database connections' },
        )
      : err;
  (pool as unknown as { connect: unknown }).connect = (cb?: ConnectCallback) => {
    if (typeof cb === 'function') return connect((err, client, done) => cb(err ? (exhausted(err) as Error) : err, client, done));
    return (connect() as Promise<pg.PoolClient>).catch((err: unknown) => {
      throw exhausted(err);
    });
  };
}

/** How many connections the pool may open (pg's default, 10, when it was not set). */
export function poolMax(pool: Queryable | pg.Pool): number {
  const max = (pool as { options?: { max?: number } }).options?.max;
  return typeof max === 'number' && max > 0 ? max : 10;
}

/**
 * A pool's connection settings, for a client of its own beside it: pg-pool keeps `password`
 * non-enumerable (out of stack traces), so a spread of `pool.options` would drop it, and the
 * client would send none (RDS IAM tokens: refused).
 */
export function clientConfigOf(pool: pg.Pool): pg.ClientConfig {
  return { ...pool.options, password: (pool.options as pg.ClientConfig).password } as pg.ClientConfig;
}

/**
 * Readiness of PostgreSQL on a connection of its own: a probe must answer (quickly) while
 * every connection of the pool is busy, and it says whether a new connection can be made.
 */
export async function probeDatabase(pool: pg.Pool, timeoutMs = 3_000): Promise<void> {
  const client = new pg.Client({ ...clientConfigOf(pool), connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
  } finally {
    await client.end().catch(() => {});
  }
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
