import { pipeline, Transform, type Readable } from 'node:stream';
import type { ExecutorOperation, FilestoreMetrics, Outcome } from '../metrics/metrics.ts';
import type { Backend, ByteRange, DeleteOptions, EntryStat, HashedFile, ListOptions, OpenedFile, RangeRequest, TransferOptions, WriteOptions, WriteResult } from './types.ts';

/**
 * Wraps a backend so every operation is timed and counted (filestore_executor_* of SPEC §7)
 * with backend = backend.kind. Behaviour is unchanged: results and errors pass through
 * untouched, and nothing is buffered. This sits on the write hot path, so it only reads a
 * clock and updates three series per call.
 */
export function instrumentBackend(backend: Backend, metrics: FilestoreMetrics): Backend {
  return new InstrumentedBackend(backend, metrics);
}

class InstrumentedBackend implements Backend {
  readonly kind: Backend['kind'];

  constructor(
    private readonly inner: Backend,
    private readonly metrics: FilestoreMetrics,
  ) {
    this.kind = inner.kind;
  }

  stat(path: string): Promise<EntryStat | null> {
    return this.timed('stat', () => this.inner.stat(path));
  }

  /** Timed from the first `next()` until the listing is exhausted, fails or is abandoned; counted once. */
  list(dir: string, options?: ListOptions): AsyncIterable<EntryStat> {
    return this.timedListing(options === undefined ? this.inner.list(dir) : this.inner.list(dir, options));
  }

  listBatches(dir: string, options?: ListOptions): AsyncIterable<EntryStat[]> {
    return this.timedListing(options === undefined ? this.inner.listBatches(dir) : this.inner.listBatches(dir, options));
  }

  private timedListing<T>(source: AsyncIterable<T>): AsyncIterable<T> {
    const record = (outcome: Outcome, start: number) => this.record('list', outcome, start);
    return {
      [Symbol.asyncIterator](): AsyncIterator<T> {
        const it = source[Symbol.asyncIterator]();
        let start = -1;
        let finished = false;
        const finish = (outcome: Outcome) => {
          if (finished) return;
          finished = true;
          record(outcome, start < 0 ? performance.now() : start);
        };
        return {
          next: () => {
            if (start < 0) start = performance.now();
            return it.next().then(
              (r) => {
                if (r.done) finish('ok');
                return r;
              },
              (err: unknown) => {
                finish('error');
                throw err;
              },
            );
          },
          // A consumer that stops early (break, return) did not see a failure.
          return: (value?: unknown) => {
            finish('ok');
            return it.return ? it.return(value) : Promise.resolve({ done: true as const, value: undefined });
          },
          throw: (err?: unknown) => {
            finish('error');
            return it.throw ? it.throw(err) : Promise.reject(err);
          },
        };
      },
    };
  }

  mkdir(path: string, options: { parents: boolean }): Promise<EntryStat> {
    return this.timed('mkdir', () => this.inner.mkdir(path, options));
  }

  async writeFile(path: string, body: Readable, options: WriteOptions): Promise<WriteResult> {
    const result = await this.timed('writeFile', () => this.inner.writeFile(path, body, options));
    this.metrics.executorBytes.inc({ backend: this.kind, operation: 'writeFile' }, result.sizeBytes);
    return result;
  }

  /** Timed (as a read) until the file is open; bytes are counted as the consumer reads them. */
  async open(path: string, range?: RangeRequest): Promise<OpenedFile> {
    const opened = await this.timed('read', () => (range === undefined ? this.inner.open(path) : this.inner.open(path, range)));
    return { ...opened, stream: this.counted(opened.stream) };
  }

  /** Timed until the stream is open; bytes are counted as the consumer reads them. */
  async read(path: string, range?: ByteRange): Promise<Readable> {
    return this.counted(await this.timed('read', () => (range === undefined ? this.inner.read(path) : this.inner.read(path, range))));
  }

  /** The bytes of a read, counted as they pass. */
  private counted(source: Readable): Readable {
    const bytes = this.metrics.executorBytes;
    const labels = { backend: this.kind, operation: 'read' };
    const counted = new Transform({
      transform(chunk: Buffer | string, _encoding, done) {
        bytes.inc(labels, typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length);
        done(null, chunk);
      },
    });
    // pipeline carries a source failure to the consumer (counted is destroyed with it) and
    // releases the source (file handle, socket) when the consumer destroys counted early.
    pipeline(source, counted, () => {});
    return counted;
  }

  hash(path: string): Promise<HashedFile | null> {
    return this.timed('hash', () => this.inner.hash(path));
  }

  move(from: string, to: string, options: TransferOptions): Promise<void> {
    return this.timed('move', () => this.inner.move(from, to, options));
  }

  copy(from: string, to: string, options: TransferOptions): Promise<void> {
    return this.timed('copy', () => this.inner.copy(from, to, options));
  }

  delete(path: string, options: DeleteOptions): Promise<void> {
    return this.timed('delete', () => this.inner.delete(path, options));
  }

  async ready(): Promise<void> {
    await this.inner.ready?.();
  }

  discardStaging(stagingId: string): Promise<void> {
    return this.timed('discardStaging', () => this.inner.discardStaging(stagingId));
  }

  private timed<T>(operation: ExecutorOperation, run: () => Promise<T>): Promise<T> {
    const start = performance.now();
    let call: Promise<T>;
    try {
      call = run();
    } catch (err) {
      // An implementation that throws before returning its promise: counted, thrown as it was.
      this.record(operation, 'error', start);
      throw err;
    }
    return call.then(
      (value) => {
        this.record(operation, 'ok', start);
        return value;
      },
      (err: unknown) => {
        this.record(operation, 'error', start);
        throw err;
      },
    );
  }

  private record(operation: ExecutorOperation, outcome: Outcome, start: number): void {
    this.metrics.recordExecutor(this.kind, operation, outcome, (performance.now() - start) / 1000);
  }
}
