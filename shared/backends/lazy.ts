import type { Readable } from 'node:stream';
import type { Backend, ByteRange, DeleteOptions, EntryStat, HashedFile, ListOptions, OpenedFile, RangeRequest, TransferOptions, WriteOptions, WriteResult } from './types.ts';

/**
 * A backend whose implementation is loaded on first use. The S3 executor pulls in the AWS SDK
 * (~20 MB of RSS per process); a process that only ever touches local mounts — an agent, a
 * reconcile worker of local mounts — never loads it.
 */
export class LazyBackend implements Backend {
  private loading: Promise<Backend> | null = null;

  constructor(
    readonly kind: Backend['kind'],
    private readonly load: () => Promise<Backend>,
  ) {}

  private backend(): Promise<Backend> {
    if (!this.loading) {
      const loading = this.load();
      this.loading = loading;
      loading.catch(() => {
        if (this.loading === loading) this.loading = null; // the next call tries again
      });
    }
    return this.loading;
  }

  async stat(path: string): Promise<EntryStat | null> {
    return (await this.backend()).stat(path);
  }

  async *list(dir: string, options?: ListOptions): AsyncIterable<EntryStat> {
    const b = await this.backend();
    yield* options === undefined ? b.list(dir) : b.list(dir, options);
  }

  async *listBatches(dir: string, options?: ListOptions): AsyncIterable<EntryStat[]> {
    const b = await this.backend();
    yield* options === undefined ? b.listBatches(dir) : b.listBatches(dir, options);
  }

  async mkdir(path: string, options: { parents: boolean }): Promise<EntryStat> {
    return (await this.backend()).mkdir(path, options);
  }

  async writeFile(path: string, body: Readable, options: WriteOptions): Promise<WriteResult> {
    return (await this.backend()).writeFile(path, body, options);
  }

  async open(path: string, range?: RangeRequest): Promise<OpenedFile> {
    const b = await this.backend();
    return range === undefined ? b.open(path) : b.open(path, range);
  }

  async read(path: string, range?: ByteRange): Promise<Readable> {
    const b = await this.backend();
    return range === undefined ? b.read(path) : b.read(path, range);
  }

  async hash(path: string): Promise<HashedFile | null> {
    return (await this.backend()).hash(path);
  }

  async move(from: string, to: string, options: TransferOptions): Promise<void> {
    return (await this.backend()).move(from, to, options);
  }

  async copy(from: string, to: string, options: TransferOptions): Promise<void> {
    return (await this.backend()).copy(from, to, options);
  }

  async delete(path: string, options: DeleteOptions): Promise<void> {
    return (await this.backend()).delete(path, options);
  }

  async ready(): Promise<void> {
    await (await this.backend()).ready?.();
  }

  async discardStaging(stagingId: string): Promise<void> {
    return (await this.backend()).discardStaging(stagingId);
  }
}
