import type { Backend, EntryStat, HashedFile } from '../../backends/types.ts';
import { FilestoreError } from '../../errors.ts';
import { rowOfEntry, type StorageRow } from '../../backends/entry-lines.ts';
import { skippedOf, type SkippedNames } from '../../backends/skipped.ts';

/** Runs `fn` over `items` with at most `limit` at once. */
export async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** What both strategies do the same way, through the mount's Backend. */
export abstract class BackendStrategy {
  constructor(
    protected readonly backend: () => Backend,
    /** Error codes of a stat that mean "not part of the tree" (an ancestor is a file or a symlink). */
    private readonly absentCodes: ReadonlySet<string>,
  ) {}

  async stat(path: string): Promise<EntryStat | null> {
    try {
      return await this.backend().stat(path);
    } catch (err) {
      if (err instanceof FilestoreError && this.absentCodes.has(err.code)) return null;
      throw err;
    }
  }

  list(dir: string, recursive: boolean, startAfter?: string): AsyncIterable<EntryStat> {
    return this.backend().list(dir, { recursive, startAfter });
  }

  async *listRows(dir: string, recursive: boolean, startAfter?: string, skipped?: SkippedNames): AsyncIterable<StorageRow[]> {
    for await (const batch of this.backend().listBatches(dir, { recursive, startAfter })) {
      const trailer = skippedOf(batch);
      if (trailer) skipped?.merge(trailer);
      else yield batch.map(rowOfEntry);
    }
  }

  /** The second look before MISSING, 16 stats at a time. */
  async confirmGone(paths: string[]): Promise<Set<string>> {
    await this.beforeSecondLook(paths);
    const gone = new Set<string>();
    await forEachLimited(paths, 16, async (p) => {
      if ((await this.stat(p)) === null) gone.add(p);
    });
    return gone;
  }

  protected async beforeSecondLook(_paths: string[]): Promise<void> {}

  hash(path: string): Promise<HashedFile | null> {
    return this.backend().hash(path);
  }
}
