import { ensureDatabase } from '../../shared/db/ensure-database.ts';
import { migrate } from '../../shared/db/migrate.ts';
import { TEST_DATABASE_URL } from './env.ts';

/**
 * Creates and migrates the test database once per run. Tests find PostgreSQL through
 * TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/filestore_test) and Redis
 * through TEST_REDIS_URL (default redis://127.0.0.1:6379/0).
 */
export default async function setup(): Promise<void> {
  await ensureDatabase(TEST_DATABASE_URL);
  await migrate(TEST_DATABASE_URL);
}
