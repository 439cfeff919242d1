/**
 * The trees of the audit bench, made straight on disk (out of band, as drift happens):
 *   - a realistic tree: `dirs` directories of `filesPerDir` files of 100 B – 4 KB;
 *   - a lean tree for the peak-RSS figure: empty files, created by `xargs touch`;
 *   - a fresh drift of that tree each round: 1 % modified, 1 % added, 1 % deleted.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runConcurrent } from './measure.ts';

export interface TreeShape {
  dirs: number;
  filesPerDir: number;
}

export interface TreeState {
  root: string;
  /** Relative paths of the files on disk now (directories not included). */
  files: string[];
  /** How many directories (the root not included). */
  dirs: number;
  /** Bytes of every file, for the shape line. */
  bytes: number;
}

export interface Drift {
  modified: number;
  added: number;
  deleted: number;
}

const WRITE_CONCURRENCY = 64;
const dirName = (d: number) => `d${String(d).padStart(3, '0')}`;
const fileName = (f: number) => `f${String(f).padStart(5, '0')}.txt`;
// One random block; every file is a slice of it, so the tree costs no hashing or RNG per file.
const BLOCK = randomBytes(8192);

/** 100 B – 4 KB, spread evenly over the files (a multiplicative hash of the index). */
const sizeOf = (i: number) => 100 + (Math.imul(i, 2654435761) >>> 0) % 3997;

/** Writes a tree of small files with many writes in flight; returns its state. */
export async function createSmallFileTree(root: string, shape: TreeShape): Promise<TreeState> {
  await mkdir(root, { recursive: true });
  await Promise.all(Array.from({ length: shape.dirs }, (_, d) => mkdir(join(root, dirName(d)))));
  const files: string[] = [];
  for (let d = 0; d < shape.dirs; d++) for (let f = 0; f < shape.filesPerDir; f++) files.push(`${dirName(d)}/${fileName(f)}`);
  let bytes = 0;
  await runConcurrent(files.length, WRITE_CONCURRENCY, async (i) => {
    const size = sizeOf(i);
    bytes += size;
    await writeFile(join(root, files[i] as string), BLOCK.subarray(i % 4096, (i % 4096) + size));
  });
  return { root, files, dirs: shape.dirs, bytes };
}

/**
 * Changes 1 % of the files each way, out of band: rewrites some with a different size,
 * adds new ones next to them, deletes others. Every round picks files that exist now and that
 * no earlier round touched in the same way, so each drift is fresh and its counts are exact.
 */
export async function applyDrift(tree: TreeState, round: number, share = 0.01): Promise<Drift> {
  const n = Math.max(1, Math.round(tree.files.length * share));
  // A stride through the list, offset by the round, spreads the changes over every directory.
  const stride = Math.max(3, Math.floor(tree.files.length / (2 * n)));
  const picked: number[] = [];
  for (let i = (round * 7 + 1) % stride; picked.length < 2 * n && i < tree.files.length; i += stride) picked.push(i);
  if (picked.length < 2 * n) throw new Error(`drift round ${round}: could not pick ${2 * n} files out of ${tree.files.length}`);
  const modify = picked.filter((_, k) => k % 2 === 0).map((i) => tree.files[i] as string);
  const remove = picked.filter((_, k) => k % 2 === 1).map((i) => tree.files[i] as string);
  const add = Array.from({ length: n }, (_, k) => `${dirName(k % tree.dirs)}/new-r${round}-${String(k).padStart(5, '0')}.txt`);

  await runConcurrent(modify.length, WRITE_CONCURRENCY, async (k) => {
    // 5 KB and up, a different size every round: outside the tree's 100 B – 4 KB and unlike any
    // earlier rewrite, so the size (not only the mtime) differs for sure.
    await writeFile(join(tree.root, modify[k] as string), Buffer.alloc(5000 + round * 1000 + (k % 1000), 0x61));
  });
  await runConcurrent(add.length, WRITE_CONCURRENCY, async (k) => {
    await writeFile(join(tree.root, add[k] as string), BLOCK.subarray(0, 100 + (k % 3997)));
  });
  await runConcurrent(remove.length, WRITE_CONCURRENCY, async (k) => {
    await rm(join(tree.root, remove[k] as string));
  });
  const gone = new Set(remove);
  tree.files = [...tree.files.filter((p) => !gone.has(p)), ...add];
  return { modified: modify.length, added: add.length, deleted: remove.length };
}

/**
 * Creates `dirs` × `filesPerDir` empty files as fast as the machine allows: one mkdir, then
 * `xargs -0 -P2 touch` fed every relative path (thousands of names per touch process).
 */
export async function createLeanTree(root: string, shape: TreeShape): Promise<{ root: string; fileCount: number; dirs: number }> {
  await mkdir(root, { recursive: true });
  await Promise.all(Array.from({ length: shape.dirs }, (_, d) => mkdir(join(root, dirName(d)))));
  const child = spawn('xargs', ['-0', '-P', '2', '-s', '131072', 'touch'], { cwd: root, stdio: ['pipe', 'ignore', 'inherit'] });
  const done = new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`xargs touch exited with ${code}`))));
  });
  for (let d = 0; d < shape.dirs; d++) {
    const names: string[] = [];
    for (let f = 0; f < shape.filesPerDir; f++) names.push(`${dirName(d)}/${fileName(f)}\0`);
    if (!child.stdin.write(names.join(''))) await new Promise((resolve) => child.stdin.once('drain', resolve));
  }
  child.stdin.end();
  await done;
  return { root, fileCount: shape.dirs * shape.filesPerDir, dirs: shape.dirs };
}
