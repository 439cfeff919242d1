import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { build } from 'esbuild';
import { FilestoreError } from '../../errors.ts';
import { PACKAGE_ROOT } from '../../package.ts';
import { comparePaths } from '../../paths.ts';
import { linePath, rowKind, type StorageRow } from '../entry-lines.ts';

/**
 * Recursive listings of local trees on a thread of their own.
 *
 * An audit's walk is mostly lstat (a few µs each, synchronous by design: see listing.ts)
 * while the same thread also reads catalogue pages and compares. On a thread of its own the
 * walk runs beside the comparison, on another core. The walker thread runs the very same
 * LocalExecutor listing (same symlink and mount-root rules) and hands over each batch as
 * lines of text, one per entry (`entryLine`): cheaper to pass between threads than objects,
 * and the comparison can match them against catalogue lines without building anything.
 *
 * Memory stays bounded: a thread lists ahead of the consumer by at most six messages of
 * about 16,000 characters per session (walker-thread.ts), held as transferred bytes. Up to WALK_THREADS threads per process serve every walk
 * (sessions by id); idle, they do not keep the process alive.
 *
 * A whole tree (`walkTree`) is split by subtree over the threads: see `walkTree`.
 */

/** What the walker thread is asked to list. */
export interface WalkRequest {
  rootPath: string;
  dir: string;
  recursive: boolean;
  startAfter?: string | undefined;
  /** Only what lies below `dir`, as one part of a larger listing (nothing if `dir` is gone). */
  below?: boolean | undefined;
}

type ToWalker = { kind: 'start'; id: number; request: WalkRequest } | { kind: 'next'; id: number; n: number } | { kind: 'stop'; id: number };

// Credit goes back to the walker thread this many messages at a time (the thread starts with
// CREDIT = 6 in walker-thread.ts): a postMessage per batch was a visible share of an audit.
const CREDIT_BACK = 3;
export type FromWalker =
  | { kind: 'batch'; id: number; bytes: Uint8Array }
  | { kind: 'done'; id: number }
  | { kind: 'error'; id: number; error: { code?: string; message: string; details?: Record<string, unknown> } };

// The thread runs plain JavaScript: its TypeScript (the listing code and what it imports) is
// bundled once per process with esbuild, from the sources, found from the package root (this
// module itself may run from a bundle in dist/). Registering tsx inside each thread instead
// cost ~40 MB of RSS per thread: a loader thread and its caches of its own.
let threadCode: Promise<string> | null = null;
const decoder = new TextDecoder();

function bundleThreadCode(): Promise<string> {
  threadCode ??= build({
    entryPoints: [join(PACKAGE_ROOT, 'shared/backends/local/walker-thread.ts')],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    write: false,
    logLevel: 'silent',
  }).then((r) => (r.outputFiles[0] as { text: string }).text);
  threadCode.catch(() => (threadCode = null)); // the next walk tries again
  return threadCode;
}

// Threads for listings: lstat is the walk's cost and runs on as many cores as there are,
// up to four (beyond that the catalogue side, not the walk, is what an audit waits for).
const WALK_THREADS = Math.max(1, Math.min(4, availableParallelism()));
const threads: WalkerThread[] = [];

class WalkerThread {
  private readonly worker: Worker;
  private nextId = 1;
  /** Per session: messages not yet taken, and the consumer waiting for one. */
  private readonly inbox = new Map<number, { queue: FromWalker[]; wake: (() => void) | null }>();
  private failed: Error | null = null;

  constructor(code: string) {
    // V8's default young generation: a 4 MB one kept RSS lower but cost the walk a third of
    // its time in scavenges.
    this.worker = new Worker(code, { eval: true });
    this.worker.on('message', (m: FromWalker) => {
      const box = this.inbox.get(m.id);
      if (!box) return;
      box.queue.push(m);
      box.wake?.();
    });
    const fail = (err: Error) => {
      this.failed = err;
      const at = threads.indexOf(this);
      if (at >= 0) threads.splice(at, 1);
      for (const [id, box] of this.inbox) {
        box.queue.push({ kind: 'error', id, error: { message: `walker thread: ${err.message}` } });
        box.wake?.();
      }
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`exited with code ${code}`)));
    // Idle, the thread does not keep the process alive (a walk in progress does: see walk).
    // Last: adding a 'message' listener refs it again.
    this.worker.unref();
  }

  /** Sessions in progress: a new session goes to the least busy thread. */
  active = 0;

  private async take(id: number): Promise<FromWalker> {
    const box = this.inbox.get(id) as { queue: FromWalker[]; wake: (() => void) | null };
    while (box.queue.length === 0) await new Promise<void>((resolve) => (box.wake = resolve));
    box.wake = null;
    return box.queue.shift() as FromWalker;
  }

  async *walk(request: WalkRequest): AsyncGenerator<StorageRow[]> {
    if (this.failed) throw new FilestoreError('STORAGE_ERROR', `walker thread: ${this.failed.message}`);
    const id = this.nextId++;
    this.inbox.set(id, { queue: [], wake: null });
    if (this.active++ === 0) this.worker.ref();
    let finished = false;
    let taken = 0;
    try {
      this.worker.postMessage({ kind: 'start', id, request } satisfies ToWalker);
      for (;;) {
        const m = await this.take(id);
        if (m.kind === 'done') {
          finished = true;
          return;
        }
        if (m.kind === 'error') {
          finished = true;
          throw new FilestoreError((m.error.code ?? 'STORAGE_ERROR') as never, m.error.message, m.error.details);
        }
        // Credit for more messages: the thread lists ahead while these batches are compared.
        if (++taken % CREDIT_BACK === 0) this.worker.postMessage({ kind: 'next', id, n: CREDIT_BACK } satisfies ToWalker);
        yield decoder.decode(m.bytes).split('\n');
      }
    } finally {
      if (--this.active === 0) this.worker.unref();
      this.inbox.delete(id);
      // Abandoned (an error elsewhere, an early stop): close the thread's listing.
      if (!finished && !this.failed) this.worker.postMessage({ kind: 'stop', id } satisfies ToWalker);
    }
  }
}

/** Lists a local directory on a walker thread, in batches of rows (see StorageRow). */
export async function* walkOnThread(request: WalkRequest): AsyncGenerator<StorageRow[]> {
  let code: string;
  try {
    code = await bundleThreadCode();
  } catch (err) {
    throw new FilestoreError('STORAGE_ERROR', `walker thread: cannot build its code: ${(err as Error).message}`);
  }
  while (threads.length < WALK_THREADS) threads.push(new WalkerThread(code));
  let least = threads[0] as WalkerThread;
  for (const t of threads) if (t.active < least.active) least = t;
  yield* least.walk(request);
}

/** A piece of a tree listing, in order: rows already listed, or a subtree still to list. */
type Unit = { rows: StorageRow[] } | { subtree: string };

// Subtrees listed at once (their sessions read ahead while an earlier one is consumed): two
// per thread, so a thread that finished a subtree goes on with another while the consumer is
// still working through the first (with one per thread, threads idled at every subtree's end).
// What they list ahead waits as transferred bytes, outside the consumer's heap.
const AHEAD = WALK_THREADS * 2;
// A directory with fewer subdirectories than this is split one level further down (a tree
// with one big top-level directory would otherwise be listed by one thread), down to SPLIT_DEPTH.
const SPLIT_MIN = 4;
const SPLIT_DEPTH = 2;

/**
 * Everything below `dir`, recursively, in byte order of path (what
 * `walkOnThread({ recursive: true })` lists), with the work split over the walker threads:
 * `dir` itself is listed non-recursively; each of its subdirectories' subtrees is listed by a
 * session of its own, up to AHEAD of them at once on the least busy threads, and their
 * batches are handed over in order. A subtree's place in the order is its key `name/`
 * (see listing.ts): after the directory's own entry, before any sibling sorting after it.
 * A resumed listing (startAfter) is listed by one session.
 */
export async function* walkTree(request: { rootPath: string; dir: string; startAfter?: string | undefined }): AsyncGenerator<StorageRow[]> {
  if (WALK_THREADS < 2 || request.startAfter !== undefined) {
    yield* walkOnThread({ ...request, recursive: true });
    return;
  }
  yield* inOrder(request.rootPath, units(request.rootPath, request.dir, 0));
}

/** The units of `dir`'s listing: its entries, and each subdirectory's subtree where it belongs. */
async function* units(rootPath: string, dir: string, depth: number): AsyncGenerator<Unit> {
  const out: Unit[] = [];
  // Subtrees seen but not yet due, sorted by key ("a-b/" sorts before "a/", so not a FIFO).
  const due: string[] = [];
  let rows: StorageRow[] = [];
  let dirs = 0;
  let buffered = true;
  const put = function* (u: Unit): Generator<Unit> {
    if (buffered) out.push(u);
    else yield u;
  };
  const flushRows = function* (): Generator<Unit> {
    if (rows.length > 0) yield* put({ rows });
    rows = [];
  };
  const listing = walkOnThread({ rootPath, dir, recursive: false, below: depth > 0 });
  for await (const batch of listing) {
    for (const row of batch) {
      while (due.length > 0 && comparePaths(`${due[0]}/`, linePath(row)) < 0) {
        yield* flushRows();
        yield* put({ subtree: due.shift() as string });
      }
      rows.push(row);
      if (rowKind(row) === 'directory') {
        dirs++;
        const path = linePath(row);
        const key = `${path}/`;
        let at = due.length;
        while (at > 0 && comparePaths(`${due[at - 1]}/`, key) > 0) at--;
        due.splice(at, 0, path);
      }
    }
    yield* flushRows();
    // A big directory is not held: its units go out as they come.
    if (buffered && out.length > 64) {
      buffered = false;
      yield* out.splice(0);
    }
  }
  for (const path of due.splice(0)) yield* put({ subtree: path });
  if (!buffered) return;
  // The whole directory is known: with few subdirectories, split one level further.
  const split = dirs < SPLIT_MIN && depth < SPLIT_DEPTH;
  for (const u of out) {
    if (split && 'subtree' in u) yield* units(rootPath, u.subtree, depth + 1);
    else yield u;
  }
}

interface Started {
  it: AsyncIterator<StorageRow[]>;
  head: Promise<IteratorResult<StorageRow[]>>;
}

/** Units in order, each subtree's session started up to AHEAD subtrees early. */
async function* inOrder(rootPath: string, source: AsyncGenerator<Unit>): AsyncGenerator<StorageRow[]> {
  // Sessions are kept here, not on the units: a unit can outlive its turn (in the array a
  // `yield*` of units() walks through), and with it the first batch its session listed.
  const ahead: Array<{ rows: StorageRow[] } | { started: Started }> = [];
  let exhausted = false;
  const start = (subtree: string): Started => {
    const it = walkOnThread({ rootPath, dir: subtree, recursive: true, below: true })[Symbol.asyncIterator]();
    const head = it.next();
    head.catch(() => {}); // surfaced when this subtree's turn comes
    return { it, head };
  };
  // Reads units until AHEAD subtrees are waiting (rows in between are few: a directory's
  // entries, at most a listing batch per unit), and starts their sessions.
  const refill = async () => {
    let subtrees = ahead.filter((u) => 'started' in u).length;
    while (!exhausted && subtrees < AHEAD) {
      const r = await source.next();
      if (r.done) exhausted = true;
      else if ('rows' in r.value) ahead.push(r.value);
      else {
        ahead.push({ started: start(r.value.subtree) });
        subtrees++;
      }
    }
  };
  try {
    for (;;) {
      await refill();
      const u = ahead.shift();
      if (!u) return;
      if ('rows' in u) {
        yield u.rows;
        continue;
      }
      const s = u.started;
      try {
        for (let r = await s.head; !r.done; r = await s.it.next()) {
          // Another subtree may start as soon as this one's session has finished.
          yield r.value;
        }
      } finally {
        await s.it.return?.(undefined);
      }
    }
  } finally {
    for (const u of ahead) if ('started' in u) await u.started.it.return?.(undefined);
    await source.return(undefined);
  }
}
