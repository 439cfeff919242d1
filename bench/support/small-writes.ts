import { mkdir, open, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Filestore } from '../../shared/runtime.ts';
import { runConcurrent, type Throughput } from './measure.ts';

export interface SmallWriteShape {
  warmup: number;
  writes: number;
  concurrency: number;
  bytes: number;
  /** Files are spread over this many directories (`d0` … `dN-1`), created during warm-up. */
  dirs: number;
}

/** A distinct body per file: a fixed pattern with the file's index in its first bytes. */
export function bodyOf(index: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes, 0x5a);
  b.writeUInt32BE(index >>> 0, 0);
  return b;
}

const relPath = (shape: SmallWriteShape, phase: string, i: number) => `d${i % shape.dirs}/${phase}-${i}.bin`;

/** `shape.writes` 4 KB orchestrator.writeFile calls after `shape.warmup` unmeasured ones. */
export async function filestoreSmallWrites(core: Filestore, mountKey: string, shape: SmallWriteShape, round = 0): Promise<Throughput> {
  const write = (phase: string) => async (i: number) => {
    await core.orchestrator.writeFile(mountKey, { path: relPath(shape, phase, i) }, Readable.from([bodyOf(i, shape.bytes)]));
  };
  await runConcurrent(shape.warmup, shape.concurrency, write(`warm${round}`));
  return runConcurrent(shape.writes, shape.concurrency, write(`f${round}`));
}

/**
 * The peer: what the filesystem costs for the same files. Each write is temp file + write +
 * fsync + close + rename; with `fsyncDir` the directory is fsynced after the rename as well
 * (what Filestore's local backend does to make the rename durable).
 */
export async function fsSmallWrites(root: string, shape: SmallWriteShape, fsyncDir: boolean): Promise<Throughput> {
  for (let d = 0; d < shape.dirs; d++) await mkdir(join(root, `d${d}`), { recursive: true });
  const write = (phase: string) => (i: number) => durableWrite(root, `d${i % shape.dirs}`, `${phase}-${i}.bin`, bodyOf(i, shape.bytes), fsyncDir);
  await runConcurrent(shape.warmup, shape.concurrency, write('warm'));
  return runConcurrent(shape.writes, shape.concurrency, write('f'));
}

/** The atomic write by hand: temp file, write, fsync, close, rename; with `fsyncDir` the directory is fsynced after the rename. */
export async function durableWrite(root: string, dir: string, name: string, body: Buffer, fsyncDir = true): Promise<void> {
  const target = join(root, dir, name);
  const tmp = `${target}.tmp`;
  const fh = await open(tmp, 'wx');
  try {
    let offset = 0;
    while (offset < body.length) offset += (await fh.write(body, offset, body.length - offset)).bytesWritten;
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, target);
  if (fsyncDir) {
    const d = await open(join(root, dir), 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }
}

/** The small rows of the floor below (their own database: nothing else reads them). */
export const FLOOR_TABLE_SQL = 'CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, path text NOT NULL, done boolean NOT NULL DEFAULT false)';

/**
 * The floor of a durable, journaled write: one synchronous commit of a small row (the journal's
 * `pending`), the durable write by hand (temp file, fsync, rename, directory fsync), and a
 * second synchronous commit (the final record). `query` runs one autocommitted statement on a
 * pool of at least `shape.concurrency` connections.
 */
export async function floorWrites(
  query: (text: string, values: unknown[]) => Promise<{ rows: Array<{ id?: string }> }>,
  root: string,
  shape: SmallWriteShape,
  round = 0,
): Promise<Throughput> {
  for (let d = 0; d < shape.dirs; d++) await mkdir(join(root, `d${d}`), { recursive: true });
  const write = (phase: string) => async (i: number) => {
    const name = `${phase}-${i}.bin`;
    const { rows } = await query('INSERT INTO bench_floor (path) VALUES ($1) RETURNING id', [`d${i % shape.dirs}/${name}`]);
    await durableWrite(root, `d${i % shape.dirs}`, name, bodyOf(i, shape.bytes));
    await query('UPDATE bench_floor SET done = true WHERE id = $1', [rows[0]?.id]);
  };
  await runConcurrent(shape.warmup, shape.concurrency, write(`warm${round}`));
  return runConcurrent(shape.writes, shape.concurrency, write(`f${round}`));
}
