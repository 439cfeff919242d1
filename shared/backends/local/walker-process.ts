import { comparePaths } from '../../paths.ts';
import { linePath } from '../entry-lines.ts';
import { skippedOf, type SkippedSummary } from '../skipped.ts';
import { LocalExecutor } from './local-executor.ts';
import { lstatFromWorkingDirectory } from './listing.ts';
import type { FromWalker, ToWalker } from './walker.ts';

/**
 * A walker process (see walker.ts): one listing per session, a batch per request, over the
 * IPC channel of the process that started it.
 *
 * A process of its own, not a thread, for one reason: its working directory is its own. The
 * listing lstats each window of entries relative to the verified handle of their directory
 * made the working directory (listing.ts `lstatFromWorkingDirectory`): as safe as lstat
 * through `/proc/self/fd/N/name`, without the kernel resolving that magic link on every
 * entry (~2 µs each, nearly half of what an lstat costs). Threads share one working
 * directory, so only a process may do that.
 */
const send = (m: FromWalker): void => {
  process.send?.(m);
};

/**
 * Serves listing sessions over this process's IPC channel until the process that started it
 * goes away: what the walker process runs (walker-main.ts).
 */
export function serveWalkerSessions(): void {
  if (typeof process.send !== 'function') throw new Error('a walker process runs as a child process with an IPC channel');
  // The process that started it went away: nothing is left to list for. That is the only way
  // it ends: a Ctrl-C or a service stop signals the whole process group, and the walker must
  // not fail the audits its parent is draining; the parent's exit disconnects it.
  process.on('disconnect', () => process.exit(0));
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => undefined);
  lstatFromWorkingDirectory();
  process.on('message', onMessage);
  // From here on a signal no longer ends it (before, one could: a process that is starting).
  send({ kind: 'ready', id: 0 });
}

// A session lists ahead of its consumer by up to CREDIT messages of about LINES entries each:
// enough that the consumer never waits on a round trip, few enough that memory stays bounded.
// The consumer gives credit back in bulk (walker.ts), not a message per message.
const CREDIT = 6;
const LINES = 2000;
// …and at most about CHARS characters: the receiving process deserializes a big message
// straight into V8's old generation, where it stays until a full GC (with 96,000 the heap of
// a 1M-file audit grew by ~100 bytes per entry; with 16,000 it stays flat).
const CHARS = 16_000;

interface Session {
  it: AsyncIterator<string[]>;
  credit: number;
  running: boolean;
  stopped: boolean;
  /** Resuming: only entries after this path are sent. */
  after: string | undefined;
  /** The listing's trailer: names it passed over (sent with `done`). */
  skipped?: SkippedSummary | undefined;
}

const sessions = new Map<number, Session>();
const encoder = new TextEncoder();
const executors = new Map<string, LocalExecutor>();

function executorFor(rootPath: string): LocalExecutor {
  let ex = executors.get(rootPath);
  if (!ex) {
    if (executors.size > 64) executors.clear();
    ex = new LocalExecutor({ rootPath });
    executors.set(rootPath, ex);
  }
  return ex;
}

function errorReply(id: number, err: unknown): FromWalker {
  const e = err as { code?: string; message?: string; details?: Record<string, unknown> };
  return { kind: 'error', id, error: { code: e.code, message: e.message ?? String(err), details: e.details } };
}

/** Lists while the session has credit: each message carries about LINES entries. */
async function pump(id: number): Promise<void> {
  const s = sessions.get(id);
  if (!s || s.running) return;
  s.running = true;
  try {
    while (s.credit > 0 && !s.stopped) {
      const lines: string[] = [];
      let chars = 0;
      let done = false;
      while (lines.length < LINES && chars < CHARS) {
        const r = await s.it.next();
        if (r.done) {
          done = true;
          break;
        }
        const skipped = skippedOf(r.value);
        if (skipped) s.skipped = skipped;
        const after = s.after;
        for (const line of after === undefined ? r.value : r.value.filter((l) => comparePaths(linePath(l), after) > 0)) {
          lines.push(line);
          chars += line.length + 1;
        }
      }
      if (s.stopped) return;
      if (lines.length > 0) {
        s.credit--;
        // As bytes, not a string: the consumer receives them outside its V8 heap (a string
        // waiting in its inbox outlives scavenges and is promoted, then lingers).
        send({ kind: 'batch', id, bytes: encoder.encode(lines.join('\n')) });
      }
      if (done) {
        sessions.delete(id);
        send(s.skipped ? { kind: 'done', id, skipped: s.skipped } : { kind: 'done', id });
        return;
      }
    }
  } catch (err) {
    sessions.delete(id);
    send(errorReply(id, err));
  } finally {
    s.running = false;
  }
}

function onMessage(m: ToWalker): void {
  if (m.kind === 'start') {
    try {
      const { rootPath, dir, recursive, startAfter, below } = m.request;
      // A resumed listing is cut here rather than by listLines, whose cut would drop the
      // trailer with what the listing skipped (it is empty, hence "before" any path).
      const listing = executorFor(rootPath).listLines(dir, { recursive, below });
      sessions.set(m.id, { it: listing[Symbol.asyncIterator](), credit: CREDIT, running: false, stopped: false, after: startAfter });
    } catch (err) {
      send(errorReply(m.id, err));
      return;
    }
    void pump(m.id);
  } else if (m.kind === 'next') {
    const s = sessions.get(m.id);
    if (!s) return;
    s.credit += m.n;
    void pump(m.id);
  } else {
    const s = sessions.get(m.id);
    sessions.delete(m.id);
    if (s) {
      s.stopped = true;
      void s.it.return?.(undefined);
    }
  }
}
