import { compareLinePaths, linePath, type StorageRow } from '../backends/entry-lines.ts';
import type { ScopeRow } from '../catalogue/nodes.ts';

/**
 * A batch of the merge: for the i-th path, what storage holds (`seen[i]`, an entry line) and
 * what the catalogue recorded (`node[i]`, a catalogue line); one of the two may be null.
 * Two arrays rather than an object per path: an audit merges every entry of a mount.
 */
export interface Pairs {
  seen: Array<StorageRow | null>;
  node: Array<ScopeRow | null>;
}

/** The path of the i-th pair. */
export function pairPath(p: Pairs, i: number): string {
  return linePath((p.seen[i] ?? p.node[i]) as string);
}

/**
 * Merges two sources of batches of lines, each sorted in byte order of the path the lines
 * begin with, into batches of pairs, streaming: memory holds one batch of each side, and the
 * merge awaits only to refill a side (an await per entry was a large share of an audit's
 * time). Throws if either side is out of order (a bug that would otherwise turn into false
 * MISSING/discovered pairs).
 */
export async function* mergeBatches(storage: AsyncIterable<StorageRow[]>, catalogue: AsyncIterable<ScopeRow[]>): AsyncGenerator<Pairs> {
  const s = new Cursor(storage);
  const c = new Cursor(catalogue);
  let last: string | null = null;
  try {
    for (;;) {
      await Promise.all([s.empty ? s.fill() : null, c.empty ? c.fill() : null]);
      const out: Pairs = { seen: [], node: [] };
      while (!s.empty && !c.empty) {
        const seen = s.peek();
        const node = c.peek();
        if (seen === null && node === null) break;
        const order = seen !== null && node !== null ? compareLinePaths(seen, node) : seen !== null ? -1 : 1;
        const line = (order <= 0 ? seen : node) as string;
        if (last !== null && compareLinePaths(last, line) >= 0) {
          throw new Error(`reconcile merge: "${linePath(line)}" after "${linePath(last)}" is out of order`);
        }
        last = line;
        if (order <= 0) s.take();
        if (order >= 0) c.take();
        out.seen.push(order <= 0 ? seen : null);
        out.node.push(order >= 0 ? node : null);
      }
      if (out.seen.length > 0) yield out;
      if (!s.empty && !c.empty && s.peek() === null && c.peek() === null) return;
    }
  } finally {
    await Promise.all([s.close(), c.close()]);
  }
}

/**
 * A read position in a source of batches: the reconciliation merge peeks and takes items
 * synchronously and awaits only to refill, once per batch (an await per entry was a large
 * share of an audit's time).
 */
export class Cursor<T> {
  private readonly it: AsyncIterator<T[]>;
  private buf: T[] = [];
  private i = 0;
  private done = false;

  constructor(source: AsyncIterable<T[]>) {
    this.it = source[Symbol.asyncIterator]();
  }

  /** True when the buffer is used up and the source may hold more. */
  get empty(): boolean {
    return this.i >= this.buf.length && !this.done;
  }

  /** Buffers the next batch that holds anything, or learns that the source is exhausted. */
  async fill(): Promise<void> {
    while (this.i >= this.buf.length && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else {
        this.buf = r.value;
        this.i = 0;
      }
    }
  }

  /** The current item; null once the source is exhausted (call fill() first when `empty`). */
  peek(): T | null {
    return this.i < this.buf.length ? (this.buf[this.i] as T) : null;
  }

  take(): void {
    this.i++;
  }

  /** Releases the source early (an open directory handle, a pending page). */
  async close(): Promise<void> {
    if (!this.done) await this.it.return?.();
  }
}

/** Items one by one from a source of batches. */
export async function* flatten<T>(source: AsyncIterable<T[]>): AsyncGenerator<T> {
  for await (const batch of source) yield* batch;
}

/** Items grouped into batches of up to `size`, in order; a source that fails hands over what it gave before the failure. */
export async function* batches<T>(source: AsyncIterable<T>, size: number): AsyncGenerator<T[]> {
  let batch: T[] = [];
  try {
    for await (const item of source) {
      batch.push(item);
      if (batch.length >= size) {
        yield batch;
        batch = [];
      }
    }
  } catch (err) {
    if (batch.length > 0) yield batch;
    throw err;
  }
  if (batch.length > 0) yield batch;
}

/** Each item mapped, in order. */
export async function* mapItems<T, U>(source: AsyncIterable<T>, fn: (item: T) => U): AsyncGenerator<U> {
  for await (const item of source) yield fn(item);
}
