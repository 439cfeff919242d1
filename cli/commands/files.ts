import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import type { CommandResult } from '../../shared/client/index.ts';
import { humanSize, print, printFields, printJson, transferProgress, type JsonOption } from '../output.ts';
import { connect, parseId, parseTarget, showTarget, type Target } from '../target.ts';

interface PutOptions extends JsonOption {
  ifMatch?: number;
  verify?: boolean;
}

/** `filestore put` and `filestore get`: file bytes in and out, streamed. */
export function registerFiles(program: Command): void {
  program
    .command('put')
    .description('upload a local file (or - for stdin), creating missing parent directories')
    .argument('<file>', 'local file to upload, or - for stdin')
    .argument('<target>', 'MOUNT:PATH to write (ending in / = into that directory under the same name)', parseTarget)
    .option('--if-match <version>', 'only if the file has this version now (0 = only if it does not exist yet)', parseId)
    .option('--verify', 'hash the file first and have the server check the bytes it received (reads the file twice)')
    .option('--json', 'print the command result as JSON')
    .action(async (file: string, target: Target, o: PutOptions, cmd: Command) => {
      const dest = intoDirectory(target, file, cmd);
      const client = connect();
      const common = { mountId: dest.mount, path: dest.path, ifMatch: o.ifMatch };
      let result: CommandResult;
      if (file === '-') {
        if (o.verify) cmd.error('--verify needs a file to read twice, not stdin', { exitCode: 2, code: 'filestore.usage' });
        result = await client.putFile({ ...common, body: process.stdin });
      } else {
        const size = await regularFileSize(file);
        const sha256 = o.verify ? await sha256Of(file) : undefined;
        const progress = transferProgress(`uploading ${path.basename(file)}`, size);
        try {
          result = await client.putLocalFile({ ...common, file, sha256, onProgress: (sent) => progress.update(sent) });
        } finally {
          progress.stop();
        }
      }
      if (o.json) return printJson(result);
      const n = result.node;
      printFields([
        ['path', showTarget({ mount: dest.mount, path: n.path })],
        ['size', `${humanSize(n.sizeBytes)} (${n.sizeBytes} bytes)`],
        ['sha256', n.sha256],
        ['version', n.version],
        ['state', n.consistencyState],
      ]);
    });

  program
    .command('get')
    .description('download a file to FILE, or to stdout')
    .argument('<target>', 'MOUNT:PATH of the file', parseTarget)
    .argument('[file]', 'where to write it (an existing directory = under the same name; - or none = stdout)')
    .option('--json', 'print what was written as JSON (with FILE only)')
    .action(async (target: Target, file: string | undefined, o: JsonOption, cmd: Command) => {
      const client = connect();
      if (file === undefined || file === '-') {
        if (o.json) cmd.error('--json needs FILE: the bytes themselves go to stdout', { exitCode: 2, code: 'filestore.usage' });
        const download = await client.getFile({ mountId: target.mount, path: target.path });
        await pipeline(download.body, process.stdout);
        return;
      }
      const dest = await localDestination(file, target);
      let progress: ReturnType<typeof transferProgress> | undefined;
      const result = await client
        .downloadToFile({
          mountId: target.mount,
          path: target.path,
          file: dest,
          onProgress: (received, total) => {
            progress ??= transferProgress(`downloading ${path.basename(dest)}`, total);
            progress.update(received);
          },
        })
        .finally(() => progress?.stop());
      if (o.json) return printJson({ target: showTarget(target), file: dest, bytes: result.bytesWritten, version: result.version, sha256: result.sha256 });
      print(`wrote ${showTarget(target)} (${humanSize(result.bytesWritten)}, version ${result.version ?? '?'}) to ${dest}`);
    });
}

/** `put a.txt local:docs/` → local:docs/a.txt, as cp does. */
function intoDirectory(target: Target, file: string, cmd: Command): Target {
  if (target.path !== '' && !target.path.endsWith('/')) return target;
  if (file === '-') cmd.error(`${showTarget(target)} names a directory; give the file a name, e.g. ${target.mount}:${target.path}data.bin`, { exitCode: 2, code: 'filestore.usage' });
  return { mount: target.mount, path: `${target.path}${path.basename(file)}` };
}

async function regularFileSize(file: string): Promise<number> {
  const st = await stat(file).catch((err: NodeJS.ErrnoException) => {
    throw new Error(err.code === 'ENOENT' ? `${file}: no such file` : `${file}: ${err.message}`);
  });
  if (!st.isFile()) throw new Error(`${file}: not a regular file${st.isDirectory() ? ' (it is a directory; put uploads one file)' : ''}`);
  return st.size;
}

async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function localDestination(file: string, target: Target): Promise<string> {
  const st = await stat(file).catch(() => null);
  return st?.isDirectory() ? path.join(file, path.posix.basename(target.path) || 'download') : file;
}
