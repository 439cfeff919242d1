import pg from 'pg';
import { runner } from 'node-pg-migrate';
import { shippedPath } from '../package.ts';
import { connectionConfig } from './pool.ts';

/** The migrations' directory name, in the sources and beside a bundle (the build copies them there). */
export const MIGRATIONS = 'migrations';

/**
 * Where the migrations are: migrations/ of the sources, or the copy beside the bundle. A file
 * directory because node-pg-migrate's runner takes nothing else (`dir`).
 */
export function migrationsDir(): string {
  return shippedPath(MIGRATIONS);
}

// node-pg-migrate only *tries* its lock and fails when another process holds it; we take a
// blocking lock of our own first, so two processes starting at once run one after the other
// and the second finds nothing left to apply.
const FILESTORE_MIGRATE_LOCK = 4_242_001;

/**
 * Applies pending migrations; safe when several processes start at once. Returns the names
 * applied. `dir`: where the migrations are (default migrationsDir()).
 */
export async function migrate(databaseUrl: string, log: (line: string) => void = () => {}, o: { dir?: string } = {}): Promise<string[]> {
  const client = new pg.Client({ ...connectionConfig(databaseUrl), application_name: 'filestore-migrate' });
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [FILESTORE_MIGRATE_LOCK]);
    const applied = await runner({
      dbClient: client,
      dir: o.dir ?? migrationsDir(),
      direction: 'up',
      migrationsTable: 'migrations',
      migrationsSchema: 'filestore',
      createMigrationsSchema: true,
      checkOrder: true,
      singleTransaction: true,
      log: () => {},
      logger: { debug: () => {}, info: () => {}, warn: log, error: log },
    });
    for (const m of applied) log(`applied migration ${m.name}`);
    return applied.map((m) => m.name);
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [FILESTORE_MIGRATE_LOCK]).catch(() => {});
    await client.end();
  }
}
