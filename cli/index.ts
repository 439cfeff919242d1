import { Command, CommanderError } from 'commander';
import { packageVersion } from '../shared/package.ts';
import { registerCommands } from './commands/commands.ts';
import { registerEvents } from './commands/events.ts';
import { registerFiles } from './commands/files.ts';
import { registerJournal } from './commands/journal.ts';
import { registerMounts } from './commands/mounts.ts';
import { registerNodes } from './commands/nodes.ts';
import { registerReconcile } from './commands/reconcile.ts';
import { describeError, formatError } from './errors.ts';
import { connect } from './target.ts';

/**
 * The `filestore` command. Exit codes: 0 ok, 1 the operation failed (an error answer, an
 * unreachable server, a local file problem), 2 the command line itself was wrong.
 * Errors go to stderr: `filestore: MESSAGE (CODE)`, or under --json one JSON document
 * `{"error":{"code","message","details?"}}` (stdout keeps only results).
 */
const args = process.argv.slice(2);
const json = args.includes('--json');
// Commander's own reports (help shown for a missing command is not an error).
const HELP = new Set(['commander.helpDisplayed', 'commander.help', 'commander.version']);
const program = new Command()
  .name('filestore')
  .version(packageVersion(), '-V, --version', 'print the version of filestore')
  // Under --json commander's own error lines are held back: the JSON document says it.
  .configureOutput({ writeErr: (text) => (json ? undefined : process.stderr.write(text)) })
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
const first = args.find((a) => !a.startsWith('-'));
const everything = (first === undefined && !args.includes('--version') && !args.includes('-V')) || first === 'help' || args.includes('--help') || args.includes('-h');
for (const [name, load] of Object.entries(LOCAL)) if (everything || first === name) (await load())(program);

// `filestore get big.iso | head`: a reader that goes away early is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
});

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    if (err.exitCode === 0 || HELP.has(err.code)) process.exit(err.exitCode === 0 ? 0 : 2);
    // Under --json a usage error is a JSON document too (commander's own line was held back).
    if (json) console.error(formatError({ code: 'USAGE_ERROR', message: err.message.replace(/^error: /, '') }, true));
    process.exit(2);
  }
  console.error(formatError(await describeError(err, args, connect), json));
  process.exit(1);
}
