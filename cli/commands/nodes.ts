import type { Command } from 'commander';
import type { FilestoreClient, Mount, Node } from '../../shared/client/index.ts';
import { unhealthyLine } from './mounts.ts';
import { NODE_HEAD, formatTime, humanSize, nodeRow, nodeSize, print, printFields, printJson, printTable, type JsonOption } from '../output.ts';
import { connect, parseTarget, showTarget, type Target } from '../target.ts';

/** `filestore ls` and `filestore stat`: browse the catalogue. */
export function registerNodes(program: Command): void {
  program
    .command('ls')
    .description('list a directory (its direct children), or show one file')
    .argument('<target>', 'MOUNT:PATH (MOUNT alone = the mount root)', parseTarget)
    .option('--json', 'print the nodes as a JSON array')
    .action(async (target: Target, o: JsonOption) => {
      const client = connect();
      const unhealthy = await warnIfUnhealthy(client, target.mount);
      const node = await client.getNodeByPath({ mountId: target.mount, path: target.path });
      const nodes: Node[] = [];
      if (node.kind === 'directory') for await (const child of client.iterateChildren(node.id, { limit: 1000 })) nodes.push(child);
      else nodes.push(node);
      if (o.json) return printJson(nodes);
      // An unhealthy mount's empty listing says nothing about storage: the warning above stands alone.
      if (nodes.length === 0) return unhealthy ? undefined : print(`${showTarget(target)} is an empty directory`);
      printTable(NODE_HEAD, nodes.map((n) => nodeRow(n)));
    });

  program
    .command('stat')
    .description('show one file or directory (directories with their recursive size and counts)')
    .argument('<target>', 'MOUNT:PATH', parseTarget)
    .option('--json', 'print the node as JSON')
    .action(async (target: Target, o: JsonOption) => {
      const client = connect();
      // Both asked at once (one round trip, not two); read in order: the mount's error or
      // warning first, as when asked one after the other.
      const asked = client.getNodeByPath({ mountId: target.mount, path: target.path });
      asked.catch(() => {}); // awaited below, unless the mount's lookup failed
      const mount = await client.getMount(target.mount);
      if (mount.health === 'unhealthy') console.error(`filestore: ${unhealthyLine(mount)}`);
      const node = await asked;
      if (o.json) return printJson(node);
      printNode(node, mount);
    });
}

/**
 * Says on stderr that a mount is unhealthy ("mount X is unhealthy: <reason>": its root gone, not a
 * directory, another directory than the one audited…) before its catalogue is shown, since what
 * the catalogue shows may not be what storage holds. True when it is.
 */
async function warnIfUnhealthy(client: FilestoreClient, mount: string): Promise<boolean> {
  const m = await client.getMount(mount);
  if (m.health !== 'unhealthy') return false;
  console.error(`filestore: ${unhealthyLine(m)}`);
  return true;
}

/** One node as `stat` shows it: the path as MOUNT:PATH (the root as MOUNT:), the mount by key. */
export function printNode(n: Node, mount: Pick<Mount, 'key'>): void {
  const fields: Array<[string, string | number | null]> = [
    ['path', showTarget({ mount: mount.key, path: n.path })],
    ['kind', n.kind],
    ['size', n.kind === 'directory' ? nodeSize(n) : `${humanSize(n.sizeBytes)} (${n.sizeBytes} bytes)`],
  ];
  if (n.kind === 'file') fields.push(['sha256', n.sha256]);
  if (n.kind === 'directory' && n.rollup) {
    fields.push(['files', n.rollup.fileCount], ['directories', n.rollup.dirCount], ['children', n.rollup.childCount]);
  }
  if (n.kind === 'symlink') fields.push(['target', String(n.metadata.symlinkTarget ?? '-')]);
  fields.push(
    ['version', n.version],
    ['state', n.consistencyState],
    ['modified', formatTime(n.mtime)],
    ['checked', formatTime(n.consistencyCheckedAt)],
    ['drift seen', formatTime(n.lastDriftDetectedAt)],
    ['reconciled', formatTime(n.lastReconciledAt)],
    ['mount', mount.key],
    ['id', n.id],
  );
  if (n.deletedAt) fields.push(['deleted', formatTime(n.deletedAt)]);
  const keys = Object.keys(n.metadata);
  if (keys.length > 0) fields.push(['metadata', JSON.stringify(n.metadata)]);
  printFields(fields);
}
