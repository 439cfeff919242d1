import { constants, type Stats } from 'node:fs';
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { comparePaths, isPlainSegment, joinPath, MAX_PATH_BYTES, normalizePath, STAGING_DIR } from '../../paths.ts';
import type { EntryStat, NodeKind } from '../types.ts';
import { comparableFields } from '../entry-lines.ts';
import { escapeBytes, escapePath, SkippedNames, skippedTrailer, skipReasonOf } from '../skipped.ts';
import { errnoOf, fsError } from './errors.ts';
import { handlePath, type MountRoot } from './safe-path.ts';
import { isSiblingTempName } from './staging.ts';

/**
 * Listing a local tree in byte order of the full path (COLLATE "C", the order S3 lists keys
 * in), without following symlinks.
 *
 * Sorting each directory by name is not enough for a recursive listing: the subtree of "a"
 * ("a/x") sorts after the siblings "a-b" and "a.b" ('-' and '.' < '/') and before "a0".
 * So each directory D contributes two sort keys: its name (the entry itself) and its name
 * followed by "/" (its whole subtree). Sorting a directory's keys by bytes and expanding
 * each subtree key in place yields the global order, because every descendant path of D
 * lies between "D/" and the next key of D's siblings. Memory stays at one sorted directory
 * per depth level; lstat runs on a window of entries at a time.
 */

const WINDOW = 256;
// ignoreBOM: a name that begins with U+FEFF keeps it (by default the decoder drops it).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The kind Filestore catalogues, or null for FIFOs, sockets and devices (invisible to it). */
export function kindOf(st: Stats): NodeKind | null {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  return null;
}

export function toEntryStat(path: string, st: Stats, symlinkTarget: string | null): EntryStat | null {
  const kind = kindOf(st);
  if (kind === null) return null;
  return {
    path,
    kind,
    sizeBytes: kind === 'file' ? st.size : 0,
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    mtime: st.mtime,
    etag: null,
    symlinkTarget: kind === 'symlink' ? symlinkTarget : null,
  };
}

interface Observed {
  stat: Stats | null;
  symlinkTarget: string | null;
}

interface SortItem {
  /** The name, or the name and "/" for the subtree: sorted by their UTF-8 bytes (comparePaths). */
  key: string;
  name: string;
  /** True for the key standing for the entry's subtree ("name/"). */
  subtree: boolean;
  /** Shared by an entry's two keys; the entry key sorts first, so it is filled in first. */
  seen: Observed;
}

/**
 * The canonical child name for raw directory-entry bytes, or null when Filestore cannot
 * address it (not UTF-8, not NFC, control characters, too long a path: counted in `skipped`)
 * or must hide it (its own staging entries).
 */
function addressableName(dirRel: string, raw: Buffer, skipped: SkippedNames): string | null {
  let name: string;
  try {
    name = utf8.decode(raw);
  } catch {
    skipped.add('not_utf8', () => `${dirRel === '' ? '' : `${escapePath(dirRel)}/`}${escapeBytes(raw)}`);
    return null;
  }
  return addressableString(dirRel, name, skipped);
}

/** `addressableName` of a name already read as a string (valid UTF-8). */
function addressableString(dirRel: string, name: string, skipped: SkippedNames): string | null {
  if (dirRel === '' && name === STAGING_DIR) return null;
  if (isSiblingTempName(name)) return null;
  const rel = joinPath(dirRel, name);
  // `dirRel` is canonical (the walk only descends into names that passed this check).
  if (isPlainSegment(name) && Buffer.byteLength(rel, 'utf8') <= MAX_PATH_BYTES) return name;
  let canonical = false;
  try {
    canonical = normalizePath(rel) === rel;
  } catch {
    // counted below
  }
  if (canonical) return name;
  skipped.add(skipReasonOf(rel), () => escapePath(rel));
  return null;
}

/**
 * Entries below `dirRel` (already checked to be a directory reached without symlinks), in
 * byte order of path. A subdirectory that vanishes or turns into something else mid-listing
 * is skipped: the listing describes the tree as it was seen, entry by entry.
 */
export async function* listSorted(mount: MountRoot, dirRel: string, recursive: boolean): AsyncGenerator<EntryStat> {
  for await (const batch of listSortedBatches(mount, dirRel, recursive)) yield* batch;
}

/**
 * The same listing in batches (up to a window of entries each, in order): what a consumer
 * of a whole tree reads, one await per batch instead of one per entry.
 */
export function listSortedBatches(mount: MountRoot, dirRel: string, recursive: boolean): AsyncGenerator<EntryStat[]> {
  return withSkipped((skipped) => walk(mount, dirRel, mount.abs(dirRel), recursive, true, false, toEntryStat, skipped));
}

/**
 * The same listing as entry lines (backends/entry-lines.ts `entryLine`), written straight
 * from each lstat without an EntryStat or a Date: what the walker processes hand over.
 *
 * With `below`, it is the part of a larger recursive listing below `dirRel` (the walker
 * processes split an audit's walk by subtree): exactly what the whole listing would hold
 * there, so a directory that vanished or stopped being one since the larger listing saw it
 * contributes nothing, as in `walk`, and it must be reached from the root without a symlink.
 */
export function listSortedLines(mount: MountRoot, dirRel: string, recursive: boolean, below: boolean): AsyncGenerator<string[]> {
  return withSkipped((skipped) => walk(mount, dirRel, mount.abs(dirRel), recursive, !below, below, lineOfStat, skipped));
}

/**
 * A listing followed, when it passed over names the catalogue cannot hold, by a trailer
 * saying which (backends/skipped.ts): counted as they are met, sent once at the end.
 */
async function* withSkipped<T>(list: (skipped: SkippedNames) => AsyncGenerator<T[]>): AsyncGenerator<T[]> {
  const skipped = new SkippedNames();
  yield* list(skipped);
  if (skipped.total > 0) yield skippedTrailer<T>(skipped);
}

/** `entryLine(toEntryStat(path, st, target))`, without building either (Node's Stats dates round mtimeMs). */
function lineOfStat(path: string, st: Stats, symlinkTarget: string | null): string | null {
  const kind = kindOf(st);
  if (kind === null) return null;
  const ms = Math.round(st.mtimeMs);
  return `${path}\tACTIVE\t${comparableFields(kind, kind === 'file' ? st.size : 0, ms, st.mode, st.uid, st.gid, null, kind === 'symlink' ? symlinkTarget : null)}${ms}`;
}

async function* walk<T>(
  mount: MountRoot,
  dirRel: string,
  dirAbs: string,
  recursive: boolean,
  top: boolean,
  exact: boolean,
  make: (path: string, st: Stats, symlinkTarget: string | null) => T | null,
  skipped: SkippedNames,
): AsyncGenerator<T[]> {
  let dir;
  try {
    dir = await mount.openVerified(dirAbs, dirRel, constants.O_RDONLY | constants.O_DIRECTORY, 'list', undefined, exact);
  } catch (err) {
    if (top) throw err;
    return;
  }
  try {
    // Entries are read through the verified handle, so a directory swapped for a symlink
    // after the check still cannot make us list what lies outside the mount.
    const base = handlePath(dir, dirAbs);
    const items = await readSortItems(base, dirRel, recursive, skipped).catch((err: unknown) => {
      throw fsError(err, dirRel, 'list');
    });
    let batch: T[] = [];
    for (let i = 0; i < items.length; i += WINDOW) {
      const window = items.slice(i, i + WINDOW);
      observeAll(
        base,
        window.filter((item) => !item.subtree),
        dirRel,
      );
      for (const item of window) {
        const { stat, symlinkTarget } = item.seen;
        if (stat === null) continue;
        const rel = joinPath(dirRel, item.name);
        if (!item.subtree) {
          const entry = make(rel, stat, symlinkTarget);
          if (entry !== null) batch.push(entry);
          else skipped.add('unsupported_kind', () => escapePath(rel)); // a FIFO, socket or device
        } else if (stat.isDirectory()) {
          // The subtree comes next in order: what precedes it goes first.
          if (batch.length > 0) yield batch;
          batch = [];
          yield* walk(mount, rel, `${base}/${item.name}`, true, false, false, make, skipped);
        }
      }
      if (batch.length > 0) yield batch;
      batch = [];
    }
  } finally {
    await dir.close();
  }
}

async function readSortItems(base: string, dirRel: string, recursive: boolean, skipped: SkippedNames): Promise<SortItem[]> {
  // Names as strings: no Buffer (and no decoding) per entry, which made a walker's garbage
  // collection a fifth of its CPU. A name that is not UTF-8 comes back holding U+FFFD (the
  // replacement character): such a directory is read again as bytes, where those names are
  // told apart and passed over (a name that really holds U+FFFD goes that way too, and is kept).
  const names = fromWorkingDirectory ? readdirSync(base, { withFileTypes: true }) : await readdir(base, { withFileTypes: true });
  if (!names.some((d) => d.name.includes('\uFFFD'))) return sortItems(names, (name) => addressableString(dirRel, name, skipped), recursive);
  const raw = fromWorkingDirectory ? readdirSync(base, { withFileTypes: true, encoding: 'buffer' }) : await readdir(base, { withFileTypes: true, encoding: 'buffer' });
  return sortItems(raw, (name) => addressableName(dirRel, name, skipped), recursive);
}

interface AnyDirent<N> {
  name: N;
  isFile(): boolean;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
  isFIFO(): boolean;
  isSocket(): boolean;
  isBlockDevice(): boolean;
  isCharacterDevice(): boolean;
}

function sortItems<N>(dirents: Array<AnyDirent<N>>, addressable: (name: N) => string | null, recursive: boolean): SortItem[] {
  const items: SortItem[] = [];
  for (const dirent of dirents) {
    const name = addressable(dirent.name);
    if (name === null) continue;
    const seen: Observed = { stat: null, symlinkTarget: null };
    items.push({ key: name, name, subtree: false, seen });
    // Some filesystems report no type (DT_UNKNOWN); such an entry may be a directory, and
    // its lstat decides before the subtree key is expanded.
    if (recursive && (dirent.isDirectory() || !typeKnown(dirent))) {
      items.push({ key: `${name}/`, name, subtree: true, seen });
    }
  }
  // comparePaths is byte order (COLLATE "C"); plain string comparison would be UTF-16 order,
  // which differs for characters beyond the BMP.
  items.sort((a, b) => comparePaths(a.key, b.key));
  return items;
}

function typeKnown(d: AnyDirent<unknown>): boolean {
  return d.isFile() || d.isSymbolicLink() || d.isFIFO() || d.isSocket() || d.isBlockDevice() || d.isCharacterDevice();
}

let fromWorkingDirectory = false;

/**
 * From now on, this process lstats each window of entries relative to its directory made the
 * working directory (`process.chdir` to the verified handle, `/proc/self/fd/N`): the lookups
 * start from that directory itself, exactly as through the handle path, but the kernel
 * resolves the magic link once per window instead of once per entry (~2 µs of an lstat's
 * ~5 µs). Only for a process that lists and does nothing else (walker-process.ts): any
 * relative path it used elsewhere would resolve against a directory of the walk, and threads
 * share the working directory. The windows are synchronous, so listings that interleave at
 * their awaits each set it for their own window. Such a process also reads directories
 * synchronously (readSortItems): blocking costs it nothing.
 */
export function lstatFromWorkingDirectory(): void {
  fromWorkingDirectory = true;
}

/**
 * lstat of a window of entries. Synchronous on purpose: a threadpool round trip per entry
 * (fs.promises.lstat) costs ~15 µs against ~3 µs for lstatSync, and a window of 256 blocks
 * the event loop for about a millisecond before the walk yields again.
 */
function observeAll(base: string, items: SortItem[], dirRel: string): void {
  let prefix = `${base}/`;
  if (fromWorkingDirectory) {
    try {
      process.chdir(base);
      prefix = '';
    } catch {
      // (not searchable, say): through the handle path, which fails the same way per entry
    }
  }
  try {
    for (const item of items) observe(prefix + item.name, joinPath(dirRel, item.name), item.seen);
  } finally {
    // Not left inside the mount between windows: an idle walker would keep its filesystem
    // busy (no unmount) and a crash could drop a core file among the user's files.
    if (prefix === '') process.chdir('/');
  }
}

function observe(abs: string, rel: string, seen: Observed): void {
  try {
    seen.stat = lstatSync(abs, { throwIfNoEntry: false }) ?? null; // gone since readdir: not part of what we saw
    if (seen.stat?.isSymbolicLink()) seen.symlinkTarget = readlinkSync(abs);
  } catch (err) {
    const errno = errnoOf(err);
    if (errno === 'ENOENT' || errno === 'ENOTDIR') seen.stat = null;
    else throw fsError(err, rel, 'list');
  }
}
