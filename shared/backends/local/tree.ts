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
}

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
    if (!(await copyRegularFile(src, dst))) return;
  } else if (st.isDirectory()) {
    await copyDirectory(src, dst, ctx);
  } else {
    return;
  }
  if (!top) await applyMetadata(dst, st);
}

/** False when the source stopped being a regular file since its lstat (nothing is copied). */
async function copyRegularFile(src: Buffer, dst: Buffer): Promise<boolean> {
  // Open the source without following a link and copy from the handle's /proc path, so a file
  // swapped for a symlink after lstat cannot pull in bytes from outside the mount.
  // O_NONBLOCK keeps a FIFO swapped in from hanging the open.
  const source = await open(src, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!(await source.stat()).isFile()) return false;
    await copyFile(handlePath(source, src), dst, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE);
  } finally {
    await source.close();
  }
  const copy = await open(dst, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    await copy.sync();
  } finally {
    await copy.close();
  }
  return true;
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
