import { Worker } from 'node:worker_threads';
import { FilestoreError } from '../../errors.ts';
import { rowOfLine, type StorageRow } from '../entry-lines.ts';

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
 * Memory stays bounded: the thread lists ahead of the consumer by at most two messages of
 * about 2,000 entries. One thread per process serves every walk (sessions by id); it does not
 * keep the process alive.
 */

/** What the walker thread is asked to list. */
export interface WalkRequest {
  rootPath: string;
  dir: string;
  recursive: boolean;
  startAfter?: string | undefined;
}

type ToWalker = { kind: 'start'; id: number; request: WalkRequest } | { kind: 'next'; id: number } | { kind: 'stop'; id: number };
export type FromWalker =
  | { kind: 'batch'; id: number; lines: string }
  | { kind: 'done'; id: number }
  | { kind: 'error'; id: number; error: { code?: string; message: string; details?: Record<string, unknown> } };

// The thread is started from JavaScript that registers tsx first, so the TypeScript of the
// listing loads whether the process runs under tsx, vitest or plain node with tsx installed.
const BOOT = `
const { register } = await import('tsx/esm/api');
register();
await import(${JSON.stringify(new URL('./walker-thread.ts', import.meta.url).href)});
`;

let shared: WalkerThread | null = null;

class WalkerThread {
  private readonly worker: Worker;
  private nextId = 1;
  /** Per session: messages not yet taken, and the consumer waiting for one. */
  private readonly inbox = new Map<number, { queue: FromWalker[]; wake: (() => void) | null }>();
  private failed: Error | null = null;

  constructor() {
    // The thread holds one directory's entries and two messages at a time: a small young
    // generation keeps its memory small (the audit's peak RSS on a 1M-file tree counts it).
    this.worker = new Worker(BOOT, { eval: true, type: 'module', resourceLimits: { maxYoungGenerationSizeMb: 4 } } as never);
    this.worker.on('message', (m: FromWalker) => {
      const box = this.inbox.get(m.id);
      if (!box) return;
      box.queue.push(m);
      box.wake?.();
    });
    const fail = (err: Error) => {
      this.failed = err;
      if (shared === this) shared = null;
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

  private active = 0;

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
        // Credit for one more message: the thread lists ahead while this batch is compared.
        this.worker.postMessage({ kind: 'next', id } satisfies ToWalker);
        yield m.lines.split('\n').map(rowOfLine);
      }
    } finally {
      if (--this.active === 0) this.worker.unref();
      this.inbox.delete(id);
      // Abandoned (an error elsewhere, an early stop): close the thread's listing.
      if (!finished && !this.failed) this.worker.postMessage({ kind: 'stop', id } satisfies ToWalker);
    }
  }
}

/** Lists a local tree on the walker thread, in batches of rows (see StorageRow). */
export function walkOnThread(request: WalkRequest): AsyncGenerator<StorageRow[]> {
  shared ??= new WalkerThread();
  return shared.walk(request);
}
