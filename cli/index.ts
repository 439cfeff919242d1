import { Command, CommanderError } from 'commander';
import { FilestoreError } from '../shared/errors.ts';
import { FilestoreApiError, FilestoreClientError, FilestoreUnreachableError } from '../shared/client/index.ts';
import { registerCommands } from './commands/commands.ts';
import { registerEvents } from './commands/events.ts';
import { registerFiles } from './commands/files.ts';
import { registerJournal } from './commands/journal.ts';
import { registerMounts } from './commands/mounts.ts';
import { registerNodes } from './commands/nodes.ts';
import { registerReconcile } from './commands/reconcile.ts';

/**
 * The `filestore` command. Exit codes: 0 ok, 1 the operation failed (an error answer, an
 * unreachable server, a local file problem), 2 the command line itself was wrong.
 */
const program = new Command()
  .name('filestore')
  .description('A trustworthy catalogue of files on local disks and S3.\nTalks to FILESTORE_URL (default http://127.0.0.1:4300) with the token in FILESTORE_TOKEN.')
  .exitOverride()
  .showHelpAfterError('(add --help for usage)');

registerMounts(program);
registerNodes(program);
registerFiles(program);
registerCommands(program);
registerReconcile(program);
registerEvents(program);
registerJournal(program);

// Commands that load server code (the database, embedded PostgreSQL with its own exit
// hooks) are loaded only when they run or help is asked for: the API commands stay quick.
const LOCAL: Record<string, () => Promise<(p: Command) => void>> = {
  token: async () => (await import('./commands/token.ts')).registerToken,
  migrate: async () => (await import('./commands/migrate.ts')).registerMigrate,
  start: async () => (await import('./commands/start.ts')).registerStart,
  'reconcile-worker': async () => (await import('./commands/reconcile-worker.ts')).registerReconcileWorker,
  agent: async () => (await import('./commands/agent.ts')).registerAgent,
};
const args = process.argv.slice(2);
const first = args.find((a) => !a.startsWith('-'));
const everything = first === undefined || first === 'help' || args.includes('--help') || args.includes('-h');
for (const [name, load] of Object.entries(LOCAL)) if (everything || first === name) (await load())(program);

// `filestore get big.iso | head`: a reader that goes away early is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  console.error(describe(err));
  process.exit(1);
}

/** What to tell a person about an error: the message, its code, and what to do about it. */
function describe(err: unknown): string {
  if (err instanceof FilestoreApiError) return `filestore: ${err.message} (${err.code})${authHint(err)}`;
  if (err instanceof FilestoreUnreachableError || err instanceof FilestoreClientError) return `filestore: ${err.message}`;
  if (err instanceof FilestoreError) return `filestore: ${err.message} (${err.code})`;
  const e = err as { code?: string; message?: string };
  if (e.code === 'ECONNREFUSED') return 'filestore: cannot reach PostgreSQL; set DATABASE_URL or start the server (see README)';
  return `filestore: ${e.message ?? String(err)}`;
}

function authHint(err: FilestoreApiError): string {
  if (err.code === 'UNAUTHENTICATED') {
    return process.env.FILESTORE_TOKEN
      ? '\nhint: FILESTORE_TOKEN is not a token this server knows; set it to one listed (as its sha256) in the server\'s FILESTORE_API_TOKENS'
      : '\nhint: set FILESTORE_TOKEN to an API token of this server (make one with `filestore token create --name NAME --scopes read,write`)';
  }
  if (err.code === 'FORBIDDEN') {
    const needed = typeof err.details?.requiredScope === 'string' ? err.details.requiredScope : /needs scope (filestore:[a-z]+)/.exec(err.message)?.[1];
    return `\nhint: set FILESTORE_TOKEN to a token with scope ${needed ?? 'filestore:write (or filestore:admin for mounts)'}`;
  }
  return '';
}
