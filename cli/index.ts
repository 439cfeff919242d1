import { Command, CommanderError } from 'commander';
import { FilestoreError } from '../shared/errors.ts';
import { registerMigrate } from './commands/migrate.ts';
import { registerStart } from './commands/start.ts';

const program = new Command()
  .name('filestore')
  .description('A trustworthy catalogue of files on local disks and S3')
  .exitOverride();

registerMigrate(program);
registerStart(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  if (err instanceof FilestoreError) {
    console.error(`filestore: ${err.message} (${err.code})`);
    process.exit(1);
  }
  const e = err as { code?: string; message?: string };
  if (e.code === 'ECONNREFUSED') {
    console.error('filestore: cannot reach PostgreSQL; set DATABASE_URL or start the server (see README)');
    process.exit(1);
  }
  console.error(`filestore: ${e.message ?? String(err)}`);
  process.exit(1);
}
