import type { StorageRow } from '../backends/entry-lines.ts';
import type { ScopeRow } from '../catalogue/nodes.ts';
import { comparePaths } from '../paths.ts';

/** One path of the merge: what storage holds (seen) and what the catalogue recorded (node). */
export interface Pair<S extends { path: string } = StorageRow, N extends { path: string } = ScopeRow> {
  path: string;
  seen: S | null;
  node: N | null;
}

/**
 * Merges two sources of batches, each sorted in byte order of path, into batches of pairs,
 * streaming: memory holds one batch of each side, and the merge awaits only to refill a side
 * (an await per entry was a large share of an audit's time). Throws if either side is out of
 * order (a bug that would otherwise turn into false MISSING/discovered pairs).
 */
export async function* mergeBatches<S extends { path: string }, N extends { path: string }>(
  storage: AsyncIterable<S[]>,
  catalogue: AsyncIterable<N[]>,
): AsyncGenerator<Pair<S, N>[]> {
  const s = new Cursor(storage);
  const c = new Cursor(catalogue);
  let last: string | null = null;
  try {
    for (;;) {
      await Promise.all([s.empty ? s.fill() : null, c.empty ? c.fill() : null]);
      const out: Pair<S, N>[] = [];
      while (!s.empty && !c.empty) {
        const seen = s.peek();
        const node = c.peek();
        if (seen === null && node === null) break;
        const order = seen && node ? comparePaths(seen.path, node.path) : seen ? -1 : 1;
        const path = order <= 0 ? (seen as S).path : (node as N).path;
        if (last !== null && comparePaths(last, path) >= 0) throw new Error(`reconcile merge: "${path}" after "${last}" is out of order`);
        last = path;
        if (order <= 0) s.take();
        if (order >= 0) c.take();
        out.push({ path, seen: order <= 0 ? seen : null, node: order >= 0 ? node : null });
      }
      if (out.length > 0) yield out;
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
