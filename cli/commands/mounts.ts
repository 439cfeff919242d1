import path from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { Mount } from '../../shared/client/index.ts';
import { formatTime, print, printFields, printJson, printTable, type JsonOption } from '../output.ts';
import { connect } from '../target.ts';

/** A new mount's key (a commander argument parser): a usage error says the rule. */
function parseKey(value: string): string {
  if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(value)) {
    throw new InvalidArgumentError(`a mount key is 1 to 63 lowercase letters, digits, - and _, starting with a letter or digit (got "${value}")`);
  }
  return value;
}

interface LocalOptions extends JsonOption {
  root: string;
  ro?: boolean;
  agent?: string;
  /** false with --no-check: the root's reachability is not checked (the safety rules still are). */
  check: boolean;
}

interface S3Options extends JsonOption {
  bucket: string;
  prefix?: string;
  region?: string;
  endpoint?: string;
  ro?: boolean;
  check: boolean;
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
        ['key', 'kind', 'location', 'access', 'state', 'agent', 'health'],
        items.map((m) => [m.key, m.kind, where(m), m.accessMode, m.state, m.agentId ?? '-', m.health]),
      );
      for (const m of items) if (m.health === 'unhealthy') print(unhealthyLine(m));
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
    .argument('<key>', 'mount key: lowercase letters, digits, - and _', parseKey)
    .requiredOption('--root <dir>', 'the directory, an absolute path on the host of the owning agent (or of the server)')
    .option('--ro', 'read-only: Filestore catalogues it but refuses writes')
    .option('--agent <id>', 'the agent that owns the directory (default: the server itself)')
    .option('--no-check', 'do not check that the directory exists and is usable now (overlap and the other safety rules are still checked)')
    .option('--json', 'print the mount as JSON')
    .action(async (key: string, o: LocalOptions, command: Command) => {
      // The root is a path on the server's (or agent's) host, which the CLI's directory says nothing about.
      if (!path.isAbsolute(o.root)) {
        command.error(`error: --root must be an absolute path on the host of the server or agent that owns the mount (got "${o.root}"; from this directory that is ${path.resolve(o.root)})`, { exitCode: 2, code: 'filestore.relativeRoot' });
      }
      const mount = await connect().createMount({
        kind: 'local',
        key,
        rootPath: o.root,
        agentId: o.agent,
        accessMode: o.ro ? 'ro' : undefined,
        check: o.check === false ? false : undefined,
      });
      printMount(mount, o, 'added');
    });
  add
    .command('s3')
    .description('register an S3 bucket, or a prefix of one, as a mount')
    .argument('<key>', 'mount key: lowercase letters, digits, - and _', parseKey)
    .requiredOption('--bucket <name>', 'the bucket')
    .option('--prefix <prefix>', 'only keys under this prefix')
    .option('--region <region>', 'the bucket region')
    .option('--endpoint <url>', 'an S3-compatible server (addressed path-style)')
    .option('--ro', 'read-only: Filestore catalogues it but refuses writes')
    .option('--no-check', 'do not check that the server can list the bucket/prefix now')
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
        check: o.check === false ? false : undefined,
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
    .command('remove')
    .description('remove a mount from the catalogue (scope filestore:admin): its nodes, snapshots and jobs go, its journal stays; the files on storage are not touched')
    .argument('<key>', 'mount key or id')
    .option('--json', 'print what was removed as JSON')
    .action(async (key: string, o: JsonOption) => {
      const removed = await connect().removeMount(key);
      if (o.json) return printJson(removed);
      print(`removed mount ${removed.mount.key} (${where(removed.mount)}): ${removed.nodes} node(s) and ${removed.jobs} job(s) dropped from the catalogue; storage untouched, journal kept`);
      if (removed.failedEntries > 0) print(`${removed.failedEntries} pending journal entr${removed.failedEntries === 1 ? 'y' : 'ies'} of crashed commands recorded failed`);
    });

  mounts
    .command('set')
    .description('change a mount setting: its access mode, or the agent that owns a local mount')
    .argument('<key>', 'mount key or id')
    .addOption(new Option('--access <mode>', 'rw (read-write) or ro (read-only)').choices(['rw', 'ro']))
    .option('--agent <id>', 'the agent that owns the local directory (FILESTORE_AGENT_ID of the agent on its host; restart that agent)')
    .option('--json', 'print the mount as JSON')
    .action(async (key: string, o: JsonOption & { access?: 'rw' | 'ro'; agent?: string }, command: Command) => {
      if (o.access === undefined && o.agent === undefined) command.error('error: say what to change: --access rw|ro and/or --agent ID', { exitCode: 2, code: 'filestore.nothingToSet' });
      const patch = { ...(o.access ? { accessMode: o.access } : {}), ...(o.agent !== undefined ? { agentId: o.agent } : {}) };
      printMount(await connect().updateMount(key, patch), o, 'updated');
    });
}

/** "mount X is unhealthy: <reason>", what ls, stat and mounts list say of such a mount. */
export const unhealthyLine = (m: Pick<Mount, 'key' | 'healthReason'>): string => `mount ${m.key} is unhealthy: ${m.healthReason ?? 'no reason recorded'}`;

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
    ['health', m.healthReason ? `${m.health}: ${m.healthReason}` : m.health],
    ['agent', m.agentId],
    ['id', m.id],
    ['created', formatTime(m.createdAt)],
  ]);
}
