import pg from 'pg';
import { bundleCli } from '../../cli/bundle.ts';
import { ensureDatabase } from '../../shared/db/ensure-database.ts';
import { migrate } from '../../shared/db/migrate.ts';
import { TEST_DATABASE_URL } from './env.ts';

/**
 * Creates a fresh test database (unless another run is using it) and migrates it, once per run, so no run inherits another's
 * rows (pending entries of mounts whose storage is long gone would slow recovery sweeps).
 * Tests find PostgreSQL through TEST_DATABASE_URL (default
 * postgres://postgres@127.0.0.1:5432/filestore_test) and Redis through TEST_REDIS_URL
 * (default redis://127.0.0.1:6379/0).
 *
 * It also builds the CLI bundle (dist/filestore.js) from the sources as they are now: tests
 * that run `node cli/bin.js …` run the bundle, as `filestore` users do, and with
 * FILESTORE_CLI_SOURCES=0 (inherited by the test processes and so by the CLI they start) they
 * run it even when a source is edited while the run goes on (the bin would otherwise turn to
 * the sources, saying so on stderr).
 */
export default async function setup(): Promise<void> {
  const built = bundleCli();
  process.env.FILESTORE_CLI_SOURCES = '0';
  const url = new URL(TEST_DATABASE_URL);
  const name = decodeURIComponent(url.pathname.slice(1));
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    // A run using the database right now (parallel runs on one machine) keeps it.
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name]);
    if ((rows[0]?.n ?? 0) === 0) await client.query(`DROP DATABASE IF EXISTS "${name.replace(/"/g, '""')}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
  await ensureDatabase(TEST_DATABASE_URL);
  await migrate(TEST_DATABASE_URL);
  await built;
}
