import pg from 'pg';
import { ensureDatabase } from '../../shared/db/ensure-database.ts';
import { migrate } from '../../shared/db/migrate.ts';
import { TEST_DATABASE_URL } from './env.ts';

/**
 * Creates a fresh test database and migrates it, once per run, so no run inherits another's
 * rows (pending entries of mounts whose storage is long gone would slow recovery sweeps).
 * Tests find PostgreSQL through TEST_DATABASE_URL (default
 * postgres://postgres@127.0.0.1:5432/filestore_test) and Redis through TEST_REDIS_URL
 * (default redis://127.0.0.1:6379/0).
 */
export default async function setup(): Promise<void> {
  const url = new URL(TEST_DATABASE_URL);
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${decodeURIComponent(url.pathname.slice(1)).replace(/"/g, '""')}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
  await ensureDatabase(TEST_DATABASE_URL);
  await migrate(TEST_DATABASE_URL);
}
