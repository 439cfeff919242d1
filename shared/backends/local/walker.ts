import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { FilestoreError } from '../../errors.ts';
import { runsFromBundle, shippedPath } from '../../package.ts';
import { comparePaths } from '../../paths.ts';
import { linePath, rowKind, type StorageRow } from '../entry-lines.ts';
import type { SkippedNames, SkippedSummary } from '../skipped.ts';

/**
 * Recursive listings of local trees in walker processes.
 *
 * An audit's walk is mostly lstat (a few µs each, synchronous by design: see listing.ts)
 * while the audit also reads catalogue pages and compares. In processes of their own the
 * walk runs beside the comparison, on other cores. A walker process runs the very same
 * LocalExecutor listing (same symlink and mount-root rules) and hands over each batch as
 * lines of text, one per entry (`entryLine`): cheap to pass between processes, and the
 * comparison can match them against catalogue lines without building anything. Processes
 * rather than threads because a process may change its working directory, and lstat
 * relative to the verified directory costs half of lstat through its handle path
 * (walker-process.ts).
 *
 * Memory stays bounded: a walker lists ahead of the consumer by at most six messages of
 * about 16,000 characters per session (walker-process.ts), received as bytes outside the
 * V8 heap. Up to WALKERS processes per process serve every walk (sessions by id); idle, they
 * do not keep the process alive, and they exit when the process that started them goes.
 *
 * A whole tree (`walkTree`) is split by subtree over the walkers: see `walkTree`.
 */

/** What a walker process is asked to list. */
export interface WalkRequest {
  rootPath: string;
  dir: string;
  recursive: boolean;
  startAfter?: string | undefined;
  /** Only what lies below `dir`, as one part of a larger listing (nothing if `dir` is gone). */
  below?: boolean | undefined;
}

export type ToWalker = { kind: 'start'; id: number; request: WalkRequest } | { kind: 'next'; id: number; n: number } | { kind: 'stop'; id: number };

// Credit goes back to the walker this many messages at a time (a session starts with
// CREDIT = 6 in walker-process.ts): a message per batch was a visible share of an audit.
const CREDIT_BACK = 3;
/** What a walker sends about one session. */
type SessionMessage =
  | { kind: 'batch'; id: number; bytes: Uint8Array }
  | { kind: 'done'; id: number; skipped?: SkippedSummary }
  | { kind: 'error'; id: number; error: { code?: string; message: string; details?: Record<string, unknown>; gone?: boolean } };
/** …and once, when it serves sessions (its signal handlers in place). */
export type FromWalker = { kind: 'ready'; id: 0 } | SessionMessage;

/** The walker process serving a walk went away (killed, crashed): not an error of the listing. */
class WalkerGoneError extends FilestoreError {
  constructor(message: string) {
    super('STORAGE_ERROR', message);
  }
}

// The walker runs plain JavaScript, read once per process and handed to `node -` on its stdin
// (no script file is written for it). Running its TypeScript through tsx instead costs ~40 MB
// of RSS per walker. A bundle reads that JavaScript from beside itself (WALKER_FILE, written by
// `npm run build` with the bundle, as trusted as the bundle's own files); the sources (tsx:
// tests, `npx filestore`) bundle walker-main.ts with esbuild, so an edit is never run stale.
/** The walker's built code, beside the bundle (cli/bundle.ts writes it). */
export const WALKER_FILE = 'walker.cjs';
let walkerCode: Promise<string> | null = null;
const decoder = new TextDecoder();

function loadWalkerCode(): Promise<string> {
  walkerCode ??= runsFromBundle() ? readFile(shippedPath(WALKER_FILE), 'utf8') : bundleWalkerFromSources();
  walkerCode.catch(() => (walkerCode = null)); // the next walk tries again
  return walkerCode;
}

// Only under tsx: esbuild is a development dependency, loaded by the first walk. The build's
// walker bundle (cli/build-options.ts walkerBundleOptions) is made the same way.
async function bundleWalkerFromSources(): Promise<string> {
  const { build } = await import('esbuild');
  const r = await build({
    entryPoints: [fileURLToPath(new URL('./walker-main.ts', import.meta.url))],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    keepNames: true,
    write: false,
    logLevel: 'silent',
  });
  return (r.outputFiles[0] as { text: string }).text;
}

// Walkers for listings: lstat is the walk's cost and runs on as many cores as there are,
// up to four (beyond that the catalogue side, not the walk, is what an audit waits for).
const WALKERS = Math.max(1, Math.min(4, availableParallelism()));
const walkers: Walker[] = [];

class Walker {
  private readonly child: ChildProcess;
  private nextId = 1;
  /** Per session: messages not yet taken, and the consumer waiting for one. */
  private readonly inbox = new Map<number, { queue: SessionMessage[]; wake: (() => void) | null }>();
  private failed: Error | null = null;
  /** Resolves once the process serves sessions (its signal handlers are in place), or is gone. */
  readonly ready: Promise<void>;
  private started: () => void = () => undefined;

  constructor(code: string) {
    this.ready = new Promise((resolve) => (this.started = resolve));
    // No environment: the walker needs none, and secrets in it (DATABASE_URL, tokens) have no
    // business in a process that only lists. NODE_OPTIONS in particular is not passed on: a
    // loader it names (tsx, under the tests) would cost the walker ~40 MB and its start.
    // A young generation of 8 MB semi-spaces instead of 16: ~15 MB less per walker, and the
    // walk no slower (with 4 MB and less it was: scavenges).
    this.child = spawn(process.execPath, ['--title=filestore-walker', '--max-semi-space-size=8', '-'], {
      stdio: ['pipe', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
      env: {},
      cwd: '/', // and back there after each window of a listing (listing.ts)
    });
    this.child.on('message', (m: FromWalker) => {
      if (m.kind === 'ready') return this.started();
      const box = this.inbox.get(m.id);
      if (!box) return;
      box.queue.push(m);
      box.wake?.();
    });
    this.child.on('error', (err) => this.fail(err));
    // 'close', not 'exit': what the walker sent before it ended is delivered first.
    this.child.on('close', (code, signal) => this.fail(new Error(`exited with ${signal ?? `code ${code}`}`)));
    this.child.stdin?.on('error', () => undefined); // a walker that died early: 'close' says so
    this.child.stdin?.end(code);
    // Spawned without its channel (out of file descriptors, say): unusable.
    if (typeof this.child.send !== 'function') this.fail(new Error('started without its IPC channel'));
    else this.setRef(false);
  }

  /** The walker is unusable: out of the pool, its sessions failed, the process gone. */
  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    this.started();
    const at = walkers.indexOf(this);
    if (at >= 0) walkers.splice(at, 1);
    for (const [id, box] of this.inbox) {
      box.queue.push({ kind: 'error', id, error: { message: `walker process: ${err.message}`, gone: true } });
      box.wake?.();
    }
    this.setRef(false);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }

  /** Idle, the walker does not keep the process alive (a walk in progress does: see walk). */
  private setRef(ref: boolean): void {
    const channel = this.child.channel as { ref(): void; unref(): void } | null | undefined;
    if (ref) {
      this.child.ref();
      channel?.ref();
    } else {
      this.child.unref();
      channel?.unref();
    }
  }

  /** Sessions in progress: a new session goes to the least busy walker. */
  active = 0;

  /** The walker's process id (undefined if it could not be started). */
  get pid(): number | undefined {
    return this.failed ? undefined : this.child.pid;
  }

  private send(m: ToWalker): void {
    if (this.failed) return;
    if (!this.child.connected) {
      this.fail(new Error('its IPC channel is closed'));
      return;
    }
    this.child.send(m, (err) => {
      if (err) this.fail(err);
    });
  }

  private async take(id: number): Promise<SessionMessage> {
    const box = this.inbox.get(id) as { queue: SessionMessage[]; wake: (() => void) | null };
    while (box.queue.length === 0) await new Promise<void>((resolve) => (box.wake = resolve));
    box.wake = null;
    return box.queue.shift() as SessionMessage;
  }

  async *walk(request: WalkRequest, skipped: SkippedNames | undefined): AsyncGenerator<StorageRow[]> {
    if (this.failed) throw new WalkerGoneError(`walker process: ${this.failed.message}`);
    const id = this.nextId++;
    this.inbox.set(id, { queue: [], wake: null });
    if (this.active++ === 0) this.setRef(true);
    let finished = false;
    let taken = 0;
    try {
      this.send({ kind: 'start', id, request });
      for (;;) {
        const m = await this.take(id);
        if (m.kind === 'done') {
          finished = true;
          if (m.skipped) skipped?.merge(m.skipped);
          return;
        }
        if (m.kind === 'error') {
          finished = true;
          if (m.error.gone) throw new WalkerGoneError(m.error.message);
          throw new FilestoreError((m.error.code ?? 'STORAGE_ERROR') as never, m.error.message, m.error.details);
        }
        // Credit for more messages: the walker lists ahead while these batches are compared.
        if (++taken % CREDIT_BACK === 0) this.send({ kind: 'next', id, n: CREDIT_BACK });
        yield decoder.decode(m.bytes).split('\n');
      }
    } finally {
      if (--this.active === 0) this.setRef(false);
      this.inbox.delete(id);
      // Abandoned (an error elsewhere, an early stop): close the walker's listing.
      if (!finished && !this.failed) this.send({ kind: 'stop', id });
    }
  }
}

/**
 * Lists a local directory in a walker process, in batches of rows (see StorageRow); names it
 * passes over (backends/skipped.ts) are added to `skipped` when the listing ends.
 */
export async function* walkOnWalker(request: WalkRequest, skipped?: SkippedNames): AsyncGenerator<StorageRow[]> {
  let code: string;
  try {
    code = await loadWalkerCode();
  } catch (err) {
    throw new FilestoreError('STORAGE_ERROR', `walker process: cannot load its code: ${(err as Error).message}`);
  }
  // A walker that died unnoticed (its exit not yet seen) fails the walk before it lists
  // anything: the walk goes to another walker (each such failure takes one out of the pool).
  // One that dies after handing rows over fails the walk, which cannot be resumed elsewhere.
  for (let attempt = 1; ; attempt++) {
    while (walkers.length < WALKERS) {
      let w: Walker;
      try {
        w = new Walker(code);
      } catch (err) {
        throw new FilestoreError('STORAGE_ERROR', `walker process: cannot start one: ${(err as Error).message}`);
      }
      if (w.pid === undefined) throw new FilestoreError('STORAGE_ERROR', 'walker process: started without its IPC channel');
      walkers.push(w);
    }
    let least = walkers[0] as Walker;
    for (const w of walkers) if (w.active < least.active) least = w;
    let listed = false;
    try {
      for await (const rows of least.walk(request, skipped)) {
        listed = true;
        yield rows;
      }
      return;
    } catch (err) {
      if (listed || attempt > WALKERS || !(err instanceof WalkerGoneError)) throw err;
    }
  }
}

/** The process ids of this process's live walkers: what their CPU and memory are measured by. */
export function walkerPids(): number[] {
  return walkers.flatMap((w) => (w.pid === undefined ? [] : [w.pid]));
}

/** Once every live walker serves sessions (a process still starting ends on a signal: tests that signal them wait for this). */
export async function walkersReady(): Promise<void> {
  await Promise.all(walkers.map((w) => w.ready));
}

/** A piece of a tree listing, in order: rows already listed, or a subtree still to list. */
type Unit = { rows: StorageRow[] } | { subtree: string };

// Subtrees listed at once (their sessions read ahead while an earlier one is consumed): two
// per walker, so a walker that finished a subtree goes on with another while the consumer is
// still working through the first (with one per walker, walkers idled at every subtree's end).
// What they list ahead waits as bytes received over the IPC channel, outside the consumer's heap.
const AHEAD = WALKERS * 2;
// A directory with fewer subdirectories than this is split one level further down (a tree
// with one big top-level directory would otherwise be listed by one walker), down to SPLIT_DEPTH.
const SPLIT_MIN = 4;
const SPLIT_DEPTH = 2;

/**
 * Everything below `dir`, recursively, in byte order of path (what
 * `walkOnWalker({ recursive: true })` lists), with the work split over the walker processes:
 * `dir` itself is listed non-recursively; each of its subdirectories' subtrees is listed by a
 * session of its own, up to AHEAD of them at once on the least busy walkers, and their
 * batches are handed over in order. A subtree's place in the order is its key `name/`
 * (see listing.ts): after the directory's own entry, before any sibling sorting after it.
 * A resumed listing (startAfter) is listed by one session.
 */
export async function* walkTree(
  request: { rootPath: string; dir: string; startAfter?: string | undefined },
  skipped?: SkippedNames,
): AsyncGenerator<StorageRow[]> {
  if (WALKERS < 2 || request.startAfter !== undefined) {
    yield* walkOnWalker({ ...request, recursive: true }, skipped);
    return;
  }
  yield* inOrder(request.rootPath, units(request.rootPath, request.dir, 0, skipped), skipped);
}

/** The units of `dir`'s listing: its entries, and each subdirectory's subtree where it belongs. */
async function* units(rootPath: string, dir: string, depth: number, skipped: SkippedNames | undefined): AsyncGenerator<Unit> {
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
  const listing = walkOnWalker({ rootPath, dir, recursive: false, below: depth > 0 }, skipped);
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
    if (split && 'subtree' in u) yield* units(rootPath, u.subtree, depth + 1, skipped);
    else yield u;
  }
}

interface Started {
  it: AsyncIterator<StorageRow[]>;
  head: Promise<IteratorResult<StorageRow[]>>;
}

/** Units in order, each subtree's session started up to AHEAD subtrees early. */
async function* inOrder(rootPath: string, source: AsyncGenerator<Unit>, skipped: SkippedNames | undefined): AsyncGenerator<StorageRow[]> {
  // Sessions are kept here, not on the units: a unit can outlive its turn (in the array a
  // `yield*` of units() walks through), and with it the first batch its session listed.
  const ahead: Array<{ rows: StorageRow[] } | { started: Started }> = [];
  let exhausted = false;
  const start = (subtree: string): Started => {
    const it = walkOnWalker({ rootPath, dir: subtree, recursive: true, below: true }, skipped)[Symbol.asyncIterator]();
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
