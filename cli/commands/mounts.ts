import path from 'node:path';
import { Option, type Command } from 'commander';
import type { Mount } from '../../shared/client/index.ts';
import { formatTime, print, printFields, printJson, printTable, type JsonOption } from '../output.ts';
import { connect } from '../target.ts';

interface LocalOptions extends JsonOption {
  root: string;
  ro?: boolean;
  agent?: string;
}

interface S3Options extends JsonOption {
  bucket: string;
  prefix?: string;
  region?: string;
  endpoint?: string;
  ro?: boolean;
}

const where = (m: Mount): string =>
  m.kind === 'local' ? (m.rootPath ?? '-') : `s3://${m.bucket ?? '?'}/${m.prefix}${m.endpoint ? ` (${m.endpoint})` : ''}`;

/** `filestore mounts …`: the mount registry (adding and changing mounts needs scope filestore:admin). */
export function registerMounts(program: Command): void {
  const mounts = program.command('mounts').description('list, add and change mounts (local directories and S3 buckets/prefixes)');

  mounts
    .command('list', { isDefault: true })
    .description('list mounts')
    .option('--json', 'print the mounts as a JSON array')
    .action(async (o: JsonOption) => {
      const { items } = await connect().listMounts();
      if (o.json) return printJson(items);
      if (items.length === 0) return print('no mounts yet: add one with `filestore mounts add local KEY --root DIR`');
      printTable(
        ['key', 'kind', 'location', 'access', 'state', 'agent'],
        items.map((m) => [m.key, m.kind, where(m), m.accessMode, m.state, m.agentId ?? '-']),
      );
    });

  mounts
    .command('show')
    .description('show one mount')
    .argument('<key>', 'mount key or id')
    .option('--json', 'print the mount as JSON')
    .action(async (key: string, o: JsonOption) => printMount(await connect().getMount(key), o));

  const add = mounts.command('add').description('register a mount');
  add
    .command('local')
    .description('register a local directory (on the host of the owning agent) as a mount')
    .argument('<key>', 'mount key: lowercase letters, digits, - and _')
    .requiredOption('--root <dir>', 'the directory (a relative path is taken from the current directory)')
    .option('--ro', 'read-only: Filestore catalogues it but refuses writes')
    .option('--agent <id>', 'the agent that owns the directory (default: the server itself)')
    .option('--json', 'print the mount as JSON')
    .action(async (key: string, o: LocalOptions) => {
      const mount = await connect().createMount({
        kind: 'local',
        key,
        rootPath: path.resolve(o.root),
        agentId: o.agent,
        accessMode: o.ro ? 'ro' : undefined,
      });
      printMount(mount, o, 'added');
    });
  add
    .command('s3')
    .description('register an S3 bucket, or a prefix of one, as a mount')
    .argument('<key>', 'mount key: lowercase letters, digits, - and _')
    .requiredOption('--bucket <name>', 'the bucket')
    .option('--prefix <prefix>', 'only keys under this prefix')
    .option('--region <region>', 'the bucket region')
    .option('--endpoint <url>', 'an S3-compatible server (addressed path-style)')
    .option('--ro', 'read-only: Filestore catalogues it but refuses writes')
    .option('--json', 'print the mount as JSON')
    .action(async (key: string, o: S3Options) => {
      const mount = await connect().createMount({
        kind: 's3',
        key,
        bucket: o.bucket,
        prefix: o.prefix,
        region: o.region,
        endpoint: o.endpoint,
        accessMode: o.ro ? 'ro' : undefined,
      });
      printMount(mount, o, 'added');
    });

  for (const [name, state, verb, description] of [
    ['pause', 'paused', 'paused', 'pause a mount: writes are refused with MOUNT_PAUSED until it is resumed'],
    ['resume', 'active', 'resumed', 'resume a paused mount'],
  ] as const) {
    mounts
      .command(name)
      .description(description)
      .argument('<key>', 'mount key or id')
      .option('--json', 'print the mount as JSON')
      .action(async (key: string, o: JsonOption) => printMount(await connect().updateMount(key, { state }), o, verb));
  }

  mounts
    .command('set')
    .description('change a mount setting')
    .argument('<key>', 'mount key or id')
    .addOption(new Option('--access <mode>', 'rw (read-write) or ro (read-only)').choices(['rw', 'ro']).makeOptionMandatory())
    .option('--json', 'print the mount as JSON')
    .action(async (key: string, o: JsonOption & { access: 'rw' | 'ro' }) => {
      printMount(await connect().updateMount(key, { accessMode: o.access }), o, 'updated');
    });
}

function printMount(m: Mount, o: JsonOption, verb?: string): void {
  if (o.json) return printJson(m);
  if (verb) print(`${verb} mount ${m.key}`);
  printFields([
    ['key', m.key],
    ['kind', m.kind],
    ['location', where(m)],
    ['region', m.region],
    ['access', m.accessMode],
    ['state', m.state],
    ['agent', m.agentId],
    ['id', m.id],
    ['created', formatTime(m.createdAt)],
  ]);
}
