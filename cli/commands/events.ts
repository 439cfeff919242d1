import type { Command } from 'commander';
import { FilestoreApiError, type FilestoreClient, type FilestoreEvent } from '../../shared/client/index.ts';
import { formatError, inCliWords } from '../errors.ts';
import { formatTime, print } from '../output.ts';
import { connect, parseId } from '../target.ts';

interface TailOptions {
  mount?: string;
  types?: string;
  after?: number;
  json?: boolean;
}

/** `filestore events tail`: the live event stream, one line per event, until Ctrl-C. */
export function registerEvents(program: Command): void {
  const events = program.command('events').description('the event stream (SPEC §5)');
  events
    .command('tail')
    .description('print events as they happen, until Ctrl-C (reconnects and resumes by itself)')
    .option('--mount <key>', 'only events of this mount')
    .option('--types <list>', 'only these types, comma-separated (e.g. filestore.node.created,filestore.node.deleted)')
    .option('--after <id>', 'first replay the events after this event id (the server keeps them for FILESTORE_OUTBOX_RETENTION)', parseId)
    .option('--json', 'one JSON document per line (the event envelope)')
    .action(async (o: TailOptions) => {
      const client = connect();
      const abort = new AbortController();
      const stop = () => abort.abort();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      const mountKey = await mountKeys(client);
      const types = o.types?.split(',').map((t) => t.trim()).filter(Boolean);
      const stream = client.events({
        mountId: o.mount,
        types,
        lastEventId: o.after,
        signal: abort.signal,
        onOpen: () => process.stderr.write(`listening for events at ${client.baseUrl}${o.mount ? ` on mount ${o.mount}` : ''} (Ctrl-C stops)\n`),
        onDisconnect: () => process.stderr.write('the event stream was interrupted; reconnecting (events in between are replayed)\n'),
      });
      try {
        for await (const event of stream) {
          if (o.json) print(JSON.stringify(event.data));
          else print(eventLine(event, await mountKey(event.data.mountId)));
        }
      } catch (err) {
        // The server no longer keeps the events after our position: say what to do, never retry.
        if (!(err instanceof FilestoreApiError) || err.code !== 'RESUME_POINT_EXPIRED') throw err;
        const said = { code: err.code, message: inCliWords(err.code, err.message), ...(err.details ? { details: err.details } : {}) };
        process.stderr.write(
          o.json
            ? `${formatError(said, true)}\n`
            : `${formatError(said, false)}\n` +
                'hint: run `filestore events tail` again without --after to follow from now; to catch up on what changed meanwhile, list again (`filestore ls MOUNT:PATH`) or reconcile (`filestore reconcile MOUNT --wait`)\n',
        );
        process.exit(1);
      }
    });
}

/** `time  type  mount:path` (the path from data.path or data.node.path; `from → to` for moves and copies; first … last (n nodes) for a list). */
function eventLine(e: FilestoreEvent, mount: string): string {
  const d = e.data.data;
  const node = d.node as { path?: unknown } | undefined;
  const path = typeof d.path === 'string' ? d.path : typeof node?.path === 'string' ? node.path : undefined;
  let where = path === undefined ? mount : `${mount}:${path}`;
  const listed = Array.isArray(d.nodes) ? (d.nodes as Array<{ path?: unknown }>) : undefined;
  if (listed !== undefined && listed.length > 0) {
    // filestore.nodes.discovered: nodes found together, first and last named.
    const first = String(listed[0]?.path);
    where = `${mount}:${first}${listed.length > 1 ? ` … ${String(listed.at(-1)?.path)}` : ''} (${listed.length} nodes)`;
  } else if (typeof d.from === 'string' && typeof d.to === 'string') where = `${mount}:${d.from} → ${d.to}`;
  else if (typeof d.command === 'string') where += ` ${d.command} ${typeof d.status === 'string' ? d.status : ''}`.trimEnd();
  return `${formatTime(e.data.occurredAt)}  ${e.type.padEnd(27)}  ${where}`;
}

/** Mount ids as keys, looked up once (and again for a mount added since). */
async function mountKeys(client: FilestoreClient): Promise<(id: string) => Promise<string>> {
  const keys = new Map<string, string>();
  const load = async () => {
    for (const m of (await client.listMounts()).items) keys.set(m.id, m.key);
  };
  await load();
  return async (id) => {
    if (!keys.has(id)) await load().catch(() => {});
    if (!keys.has(id)) keys.set(id, id);
    return keys.get(id) as string;
  };
}
