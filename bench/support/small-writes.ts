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
function bodyOf(index: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes, 0x5a);
  b.writeUInt32BE(index >>> 0, 0);
  return b;
}

const relPath = (shape: SmallWriteShape, phase: string, i: number) => `d${i % shape.dirs}/${phase}-${i}.bin`;

/** `shape.writes` 4 KB orchestrator.writeFile calls after `shape.warmup` unmeasured ones. */
export async function filestoreSmallWrites(fs: Filestore, mountKey: string, shape: SmallWriteShape, round = 0): Promise<Throughput> {
  const write = (phase: string) => async (i: number) => {
    await fs.orchestrator.writeFile(mountKey, { path: relPath(shape, phase, i) }, Readable.from([bodyOf(i, shape.bytes)]));
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
  const write = (phase: string) => async (i: number) => {
    const target = join(root, relPath(shape, phase, i));
    const tmp = `${target}.tmp`;
    const fh = await open(tmp, 'wx');
    try {
      const body = bodyOf(i, shape.bytes);
      let offset = 0;
      while (offset < body.length) offset += (await fh.write(body, offset, body.length - offset)).bytesWritten;
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
    if (fsyncDir) {
      const dir = await open(join(root, `d${i % shape.dirs}`), 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    }
  };
  await runConcurrent(shape.warmup, shape.concurrency, write('warm'));
  return runConcurrent(shape.writes, shape.concurrency, write('f'));
}
