import { constants, type Stats } from 'node:fs';
import {
  chmod,
  copyFile,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  readlink,
  symlink,
  utimes,
} from 'node:fs/promises';
import { FilestoreError } from '../../errors.ts';
import { errnoOf } from './errors.ts';
import { handlePath, type MountRoot } from './safe-path.ts';

/**
 * Copying entries without following symlinks. Paths are Buffers here because a copy (and a
 * cross-filesystem move, which is a copy plus a delete) must carry over every entry, even
 * names that are not valid UTF-8 and that Filestore itself cannot address: dropping them would
 * lose data once the source is deleted.
 */

// Permission bits and the sticky bit. setuid/setgid are dropped: the copy belongs to whoever
// runs Filestore, as with `cp -p` run by another user.
const COPIED_MODE_BITS = 0o1777;
// Regular files copied at once within one directory; subdirectories are walked one at a
// time, so open handles stay at one per depth level plus this many.
const FILE_COPY_CONCURRENCY = 8;

const SLASH = Buffer.from('/');

function childOf(dir: Buffer, name: Buffer): Buffer {
  return Buffer.concat([dir, SLASH, name]);
}

function asBuffer(p: string | Buffer): Buffer {
  return typeof p === 'string' ? Buffer.from(p) : p;
}

export interface CopyContext {
  mount: MountRoot;
  /** Mount-relative path of the copy's source, for error messages. */
  rel: string;
  op: string;
  /** Counts what the copy created, for verifyCopy. */
  tally?: CopyTally | undefined;
}

/** What a copy created (or what a tree holds): entries of every kind Filestore keeps, and file bytes. */
export interface CopyTally {
  entries: number;
  bytes: number;
}

export const newTally = (): CopyTally => ({ entries: 0, bytes: 0 });

/**
 * Copies the entry at `src` to `dst`, which must not exist. Symlinks are recreated with the
 * same target text, never followed; regular files are cloned copy-on-write where the
 * filesystem can, and fsynced; FIFOs, sockets and devices are skipped (Filestore does not
 * catalogue them). Mode and mtime are carried over for everything below the top entry;
 * the caller applies them to the top entry with `applyMetadata` once it is in place, because
 * a directory's final mode may forbid the rename that puts it there.
 * Returns the source's lstat.
 */
export async function copyEntry(src: string | Buffer, dst: string | Buffer, ctx: CopyContext): Promise<Stats> {
  const srcBuf = asBuffer(src);
  const st = await lstat(srcBuf);
  await copyInto(srcBuf, asBuffer(dst), st, ctx, true);
  return st;
}

async function copyInto(src: Buffer, dst: Buffer, st: Stats, ctx: CopyContext, top: boolean): Promise<void> {
  if (st.isSymbolicLink()) {
    await symlink(await readlink(src, { encoding: 'buffer' }), dst);
  } else if (st.isFile()) {
    const bytes = await copyRegularFile(src, dst);
    if (bytes === null) return;
    if (ctx.tally) ctx.tally.bytes += bytes;
  } else if (st.isDirectory()) {
    await copyDirectory(src, dst, ctx);
  } else {
    return;
  }
  if (ctx.tally) ctx.tally.entries += 1;
  if (!top) await applyMetadata(dst, st);
}

/**
 * Counts what the tree at `abs` holds (symlinks never followed; FIFOs, sockets and devices,
 * which a copy never creates, not counted).
 */
export async function tallyTree(abs: string | Buffer): Promise<CopyTally> {
  const tally = newTally();
  const visit = async (path: Buffer, st: Stats): Promise<void> => {
    if (st.isFile()) tally.bytes += st.size;
    else if (!st.isDirectory() && !st.isSymbolicLink()) return;
    tally.entries += 1;
    if (!st.isDirectory()) return;
    for (const name of await readdir(path, { encoding: 'buffer' })) {
      const child = childOf(path, name);
      await visit(child, await lstat(child));
    }
  };
  const top = asBuffer(abs);
  await visit(top, await lstat(top));
  return tally;
}

/**
 * Checks that the tree at `abs` holds exactly what the copy created: a copy whose staging was
 * disturbed (part of it removed or rewritten by another process) must fail, never be
 * catalogued as complete.
 */
export async function verifyCopy(abs: string | Buffer, copied: CopyTally, rel: string, op: string): Promise<void> {
  const found = await tallyTree(abs);
  if (found.entries === copied.entries && found.bytes === copied.bytes) return;
  throw new FilestoreError(
    'STORAGE_ERROR',
    `the ${op} of ${JSON.stringify(rel)} is incomplete: ${found.entries} of ${copied.entries} entries and ${found.bytes} of ` +
      `${copied.bytes} bytes arrived (something changed the copy while it was built); nothing was recorded, retry`,
    { path: rel, op, expectedEntries: copied.entries, foundEntries: found.entries, expectedBytes: copied.bytes, foundBytes: found.bytes },
  );
}

/** The bytes copied, or null when the source stopped being a regular file since its lstat (nothing is copied). */
async function copyRegularFile(src: Buffer, dst: Buffer): Promise<number | null> {
  // Open the source without following a link and copy from the handle's /proc path, so a file
  // swapped for a symlink after lstat cannot pull in bytes from outside the mount.
  // O_NONBLOCK keeps a FIFO swapped in from hanging the open.
  const source = await open(src, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!(await source.stat()).isFile()) return null;
    await copyFile(handlePath(source, src), dst, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
  } finally {
    await source.close();
  }
  const copy = await open(dst, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    await copy.sync();
    return (await copy.stat()).size;
  } finally {
    await copy.close();
  }
}

async function copyDirectory(src: Buffer, dst: Buffer, ctx: CopyContext): Promise<void> {
  // Owner-only while it fills; the real mode is applied once its contents are in.
  await mkdir(dst, { mode: 0o700 });
  const dir = await ctx.mount.openVerified(src, ctx.rel, constants.O_RDONLY | constants.O_DIRECTORY, ctx.op);
  try {
    const base = asBuffer(handlePath(dir, src));
    const names = await readdir(base, { encoding: 'buffer' });
    const subdirs: Array<[Buffer, Stats]> = [];
    for (let i = 0; i < names.length; i += FILE_COPY_CONCURRENCY) {
      await Promise.all(
        names.slice(i, i + FILE_COPY_CONCURRENCY).map(async (name) => {
          const child = childOf(base, name);
          const childSt = await lstat(child);
          if (childSt.isDirectory()) subdirs.push([name, childSt]);
          else await copyInto(child, childOf(dst, name), childSt, ctx, false);
        }),
      );
    }
    for (const [name, childSt] of subdirs) {
      await copyInto(childOf(base, name), childOf(dst, name), childSt, ctx, false);
    }
  } finally {
    await dir.close();
  }
}

/** Gives `abs` the mode and timestamps of `st` (only the timestamps for a symlink). */
export async function applyMetadata(abs: string | Buffer, st: Stats): Promise<void> {
  if (st.isSymbolicLink()) {
    await lutimes(abs, st.atimeMs / 1000, st.mtimeMs / 1000).catch((err: unknown) => {
      // Some platforms cannot set a link's own times; the link itself is what matters.
      if (errnoOf(err) !== 'ENOSYS' && errnoOf(err) !== 'EOPNOTSUPP') throw err;
    });
    return;
  }
  await chmod(abs, st.mode & COPIED_MODE_BITS);
  await utimes(abs, st.atimeMs / 1000, st.mtimeMs / 1000);
}
