import type { Command } from 'commander';
import { loadConfig } from '../../shared/index-config.ts';
import { readyDatabase } from '../../shared/db/index.ts';
import { migrate } from '../../shared/db/index-migrate.ts';

const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/filestore';

/** `filestore migrate`: applies pending migrations to DATABASE_URL (or the FILESTORE_DB_* database, IAM auth). */
export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('apply pending database migrations (safe to run from several processes at once)')
    .action(async () => {
      const config = loadConfig({ FILESTORE_ALLOW_INLINE: 'true', ...process.env });
      const database = config.database ?? { databaseUrl: DEFAULT_DATABASE_URL, iamAuth: null };
      const url = database.databaseUrl;
      await readyDatabase(database);
      const applied = await migrate(url, (l) => console.error(l));
      console.log(applied.length === 0 ? 'database is up to date' : `applied ${applied.length} migration(s): ${applied.join(', ')}`);
    });
}
