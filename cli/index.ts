import { Command, CommanderError } from 'commander';
import { packageVersion } from '../shared/index-package.ts';

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

/**
 * Each command's module, loaded only when that command runs (or help, or an unknown command,
 * asks for them all), in the order help lists them. Run from the bundle (cli/bin.js) every
 * module is a chunk of its own (cli/build-options.ts `splitting`): `filestore stat` loads the
 * API client and no server code, `filestore --version` none of them.
 */
type Register = (program: Command) => void;
const COMMANDS: Array<[names: string[], load: () => Promise<Register>]> = [
  [['mounts'], async () => (await import('./commands/mounts.ts')).registerMounts],
  [['ls', 'stat'], async () => (await import('./commands/nodes.ts')).registerNodes],
  [['put', 'get'], async () => (await import('./commands/files.ts')).registerFiles],
  [['mkdir', 'mv', 'cp', 'rm'], async () => (await import('./commands/commands.ts')).registerCommands],
  [['reconcile', 'jobs'], async () => (await import('./commands/reconcile.ts')).registerReconcile],
  [['events'], async () => (await import('./commands/events.ts')).registerEvents],
  [['journal'], async () => (await import('./commands/journal.ts')).registerJournal],
  // Server code (the database, embedded PostgreSQL with its own exit hooks).
  [['token'], async () => (await import('./commands/token.ts')).registerToken],
  [['migrate'], async () => (await import('./commands/migrate.ts')).registerMigrate],
  [['start'], async () => (await import('./commands/start.ts')).registerStart],
  [['reconcile-worker'], async () => (await import('./commands/reconcile-worker.ts')).registerReconcileWorker],
  [['agent'], async () => (await import('./commands/agent.ts')).registerAgent],
];
const first = args.find((a) => !a.startsWith('-'));
const version = first === undefined && (args.includes('--version') || args.includes('-V'));
const help = first === 'help' || args.includes('--help') || args.includes('-h');
const chosen = COMMANDS.filter(([names]) => first !== undefined && names.includes(first));
// No command, help, or a name no module has (commander then suggests the nearest): all of them.
const load = version ? [] : help || chosen.length === 0 ? COMMANDS : chosen;
for (const register of await Promise.all(load.map(([, l]) => l()))) register(program);

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
    if (json) console.error((await import('./errors.ts')).formatError({ code: 'USAGE_ERROR', message: err.message.replace(/^error: /, '') }, true));
    process.exit(2);
  }
  const [{ describeError, formatError }, { connect }] = await Promise.all([import('./errors.ts'), import('./target.ts')]);
  console.error(formatError(await describeError(err, args, connect), json));
  process.exit(1);
}
