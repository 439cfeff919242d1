import type { Command } from 'commander';
import type { CommandResult } from '../../shared/client/index.ts';
import { print, printJson, type JsonOption } from '../output.ts';
import { connect, parseEntryTarget, parseId, showTarget, type Target } from '../target.ts';

interface TransferOptions extends JsonOption {
  overwrite?: boolean;
  ifMatch?: number;
}

/** `mkdir`, `mv`, `cp`, `rm`: the journaled commands, one request each. */
export function registerCommands(program: Command): void {
  program
    .command('mkdir')
    .description('create a directory')
    .argument('<target>', 'MOUNT:PATH', parseEntryTarget)
    .option('-p, --parents', 'create missing parent directories; an existing directory is fine')
    .option('--json', 'print the command result as JSON')
    .action(async (target: Target, o: JsonOption & { parents?: boolean }) => {
      const result = await connect().mkdir({ mountId: target.mount, path: target.path, parents: o.parents === true });
      report(o, result, `directory ${showTarget(target)} (version ${result.node.version})`);
    });

  for (const [name, verb, description] of [
    ['mv', 'moved', 'move or rename a file or directory (also to another mount)'],
    ['cp', 'copied', 'copy a file or directory tree (also to another mount)'],
  ] as const) {
    program
      .command(name)
      .description(description)
      .argument('<source>', 'MOUNT:PATH', parseEntryTarget)
      .argument('<destination>', 'MOUNT:PATH', parseEntryTarget)
      .option('--overwrite', 'replace what is at the destination')
      .option('--if-match <version>', 'only if the source has this version now', parseId)
      .option('--json', 'print the command result as JSON')
      .action(async (src: Target, dst: Target, o: TransferOptions) => {
        const client = connect();
        const input = {
          mountId: src.mount,
          path: src.path,
          targetPath: dst.path,
          targetMountId: dst.mount === src.mount ? undefined : dst.mount,
          overwrite: o.overwrite === true,
          expectedVersion: o.ifMatch,
        };
        const result = name === 'mv' ? await client.move(input) : await client.copy(input);
        report(o, result, `${verb} ${showTarget(src)} → ${showTarget(dst)} (version ${result.node.version})`);
      });
  }

  program
    .command('rm')
    .description('delete a file, or with -r a directory and everything in it')
    .argument('<target>', 'MOUNT:PATH', parseEntryTarget)
    .option('-r, --recursive', 'delete a directory with its contents')
    .option('--if-match <version>', 'only if it has this version now', parseId)
    .option('--json', 'print the command result as JSON')
    .action(async (target: Target, o: JsonOption & { recursive?: boolean; ifMatch?: number }) => {
      const result = await connect().delete({ mountId: target.mount, path: target.path, recursive: o.recursive === true, expectedVersion: o.ifMatch });
      report(o, result, `deleted ${showTarget(target)}`);
    });
}

function report(o: JsonOption, result: CommandResult, line: string): void {
  if (o.json) printJson(result);
  else print(line);
}
