import pg from 'pg';

/**
 * Creates the test database once per run. Tests find PostgreSQL through TEST_DATABASE_URL
 * (default postgres://postgres@127.0.0.1:5432/filestore_test) and Redis through
 * TEST_REDIS_URL (default redis://127.0.0.1:6379/0).
 */
export default async function setup(): Promise<void> {
  const url = new URL(process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/filestore_test');
  const dbName = url.pathname.slice(1);
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [dbName]);
    if (rowCount === 0) await client.query(`CREATE DATABASE "${dbName.replace(/"/g, '""')}"`);
  } catch (err) {
    // Two runs racing to create it is fine.
    if ((err as { code?: string }).code !== '42P04') throw err;
  } finally {
    await client.end();
  }
  process.env.TEST_DATABASE_URL = url.toString();
}
