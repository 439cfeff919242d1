import type { Command } from 'commander';
import type { JournalEntry, Mount } from '../../shared/client/index.ts';
import { formatTime, print, printFields, printJson, printTable, type JsonOption } from '../output.ts';
import { connect, parseId } from '../target.ts';

interface ListOptions extends JsonOption {
  pending?: boolean;
  mount?: string;
  limit?: string;
}

/** What an entry did, in a line: `writeFile docs/a.txt`, `move a -> b`. */
function what(e: JournalEntry): string {
  const r = e.request as { path?: unknown; targetPath?: unknown };
  const target = typeof r.targetPath === 'string' ? ` -> ${r.targetPath}` : '';
  return `${e.command} ${String(r.path ?? '')}${target}`;
}

/**
 * `filestore journal`: the command history of a mount, and the pending entries an admin
 * resolves (`--pending`: what recovery could not judge; `journal resolve ID`).
 */
export function registerJournal(program: Command): void {
  const journal = program.command('journal').description('command history; pending entries and their resolution (admin)');

  journal
    .command('list', { isDefault: true })
    .description('list journal entries: of one mount (--mount), or the pending entries of every mount (--pending; scope filestore:admin without --mount)')
    .option('--pending', 'only entries still pending (commands that never finished: a crash, storage unreachable)')
    .option('--mount <key>', 'only this mount')
    .option('--limit <n>', 'at most this many entries', '1000')
    .option('--json', 'print the entries as a JSON array')
    .action(async (o: ListOptions, command: Command) => {
      if (!o.pending && !o.mount) command.error("error: pass --mount KEY (a mount's history) or --pending (the pending entries of every mount)", { exitCode: 2, code: 'filestore.journalWhich' });
      const client = connect();
      const limit = parseId(o.limit ?? '1000');
      const entries: JournalEntry[] = [];
      for await (const e of client.iterateJournal({ mountId: o.mount, status: o.pending ? 'pending' : undefined, limit: Math.min(limit, 1000) })) {
        entries.push(e);
        if (entries.length >= limit) break;
      }
      if (o.json) return printJson(entries);
      if (entries.length === 0) return print(o.pending ? `no pending journal entries${o.mount ? ` on mount ${o.mount}` : ''}` : `no journal entries on mount ${o.mount}`);
      const keys = new Map((await client.listMounts()).items.map((m: Mount) => [m.id, m.key]));
      printTable(
        ['id', 'mount', 'command', 'status', 'started', 'error'],
        entries.map((e) => [e.id, keys.get(e.mountId) ?? e.mountId, what(e), e.status, formatTime(e.startedAt), e.error ? `${e.error.code}: ${e.error.message}` : '-']),
      );
      if (o.pending) print('resolve one with `filestore journal resolve ID` (storage is looked at; the entry is recorded completed or failed, nothing runs again)');
    });

  journal
    .command('resolve')
    .description('resolve a pending entry (scope filestore:admin): storage is looked at, then the entry is recorded completed (the effect is there) or failed (it is not); nothing runs again')
    .argument('<id>', 'journal entry id', parseId)
    .option('--json', 'print the outcome as JSON')
    .action(async (id: number, o: JsonOption) => {
      const resolved = await connect().resolveJournalEntry(id);
      if (o.json) return printJson(resolved);
      const e = resolved.entry;
      print(resolved.outcome === 'succeeded'
        ? `journal entry ${id} (${what(e)}) completed: storage shows its effect, now catalogued`
        : `journal entry ${id} (${what(e)}) failed: storage does not show its effect${e.error ? ` (${e.error.code}: ${e.error.message})` : ''}`);
      printFields([['status', e.status], ['finished', formatTime(e.finishedAt)]]);
    });
}
