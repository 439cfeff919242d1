import { compareBytes } from './keys.ts';
import type { RawEntry } from './listing.ts';

/** One entry of a listing, with its path relative to the listed directory. */
export interface ListedItem {
  path: string;
  kind: 'file' | 'directory';
  sizeBytes: number;
  mtime: Date | null;
  etag: string | null;
}

export interface PathOrderOptions {
  /** True when any key lies below directory `dir` (relative path); used only when the buffer overflows. */
  probe(dir: string): Promise<boolean>;
  /** Entries held back before probing instead of waiting (bounds memory; default 1,000). */
  maxBuffered?: number | undefined;
}

const SLASH = 0x2f;

/**
 * Turns S3's key order into path order.
 *
 * S3 lists keys in byte order, and a directory "a" shows up at the position of "a/" (its marker,
 * its common prefix or its first key). Paths sort "a" < "a-b" < "a.txt" < "a/x" because "-" and
 * "." come before "/", so the directory has to be emitted before entries that S3 listed earlier.
 *
 * An entry P can only be overtaken by a directory Q that is a prefix of P followed by a character
 * below "/" (P = Q + "-…"). So P is held until the listing has passed "Q/" for every such Q: by
 * then Q either appeared (and was inserted in front of P) or has no keys. Held entries are kept
 * sorted; usually only a few wait. If more than `maxBuffered` wait, the oldest one's candidate
 * directory is settled with one probe (ListObjectsV2 MaxKeys=1), so memory stays bounded whatever
 * the key names are.
 *
 * Recursive listings also synthesise every implied directory exactly once (keys under one
 * directory are contiguous in key order, so a directory is new when the previous entry was not
 * inside it). A zero-byte "dir/" marker is the directory itself. When a file "a" and keys under
 * "a/" both exist, the file wins, as in stat: the directory "a" and everything below it are left
 * out of the listing (they stay on storage).
 */
export class PathOrderedListing {
  private readonly probe: (dir: string) => Promise<boolean>;
  private readonly maxBuffered: number;
  private lastKey: string | null = null;
  /** Held entries, sorted by path. */
  private readonly held: ListedItem[] = [];
  /** Directories the previous accepted entry lies in (or is). */
  private prevChain = new Set<string>();
  /** Files whose would-be subtree ("F/…") the listing has not yet passed. */
  private recentFiles: string[] = [];
  /** Candidate directories settled by a probe: true = inserted already, false = no keys. */
  private readonly probed = new Map<string, boolean>();

  constructor(options: PathOrderOptions) {
    this.probe = options.probe;
    this.maxBuffered = options.maxBuffered ?? 1000;
  }

  /** Feeds the next entry in key order; returns the entries that are now safe to emit, in path order. */
  async push(entry: RawEntry): Promise<ListedItem[]> {
    const k = entry.key;
    // An entry standing for a truncated key (see S3Executor.listable) may sort before the
    // previous one; it is inside a directory already seen, and the position never moves back.
    if (this.lastKey === null || compareBytes(k, this.lastKey) > 0) this.lastKey = k;
    this.forgetPassed(this.lastKey);

    const isDir = entry.type === 'prefix' || k.endsWith('/');
    const path = isDir ? k.slice(0, -1) : k;
    // The listed directory's own marker is not an entry of its listing.
    if (path === '') return this.release();

    const chain = ancestorDirs(path);
    if (isDir) chain.push(path);
    if (chain.some((d) => this.recentFiles.includes(d))) return this.release(); // shadowed by a file

    for (const dir of chain) {
      if (!this.prevChain.has(dir) && this.probed.get(dir) !== true) this.insert(directoryItem(dir));
    }
    this.prevChain = new Set(chain);

    if (!isDir && entry.type === 'object') {
      this.insert({
        path,
        kind: 'file',
        sizeBytes: entry.sizeBytes,
        mtime: entry.lastModified,
        etag: entry.etag,
      });
      this.recentFiles.push(path);
    }
    return this.release();
  }

  /** The listing is over: everything held is safe. */
  finish(): ListedItem[] {
    return this.held.splice(0, this.held.length);
  }

  private async release(): Promise<ListedItem[]> {
    const out: ListedItem[] = [];
    let emitted = 0;
    while (emitted < this.held.length) {
      const front = this.held[emitted] as ListedItem;
      const blocker = this.blockingCandidate(front.path);
      if (blocker === null) {
        out.push(front);
        emitted++;
        continue;
      }
      if (this.held.length - emitted <= this.maxBuffered) break;
      const exists = await this.probe(blocker);
      this.probed.set(blocker, exists);
      if (exists) {
        // It sorts before `front`, which is the smallest held entry: it goes right here.
        this.held.splice(emitted, 0, directoryItem(blocker));
      }
    }
    this.held.splice(0, emitted);
    return out;
  }

  /** The shortest directory that might still have to be emitted before `path`, or null. */
  private blockingCandidate(path: string): string | null {
    for (let i = 1; i < path.length; i++) {
      const c = path.charCodeAt(i);
      if (c >= SLASH || path.charCodeAt(i - 1) === SLASH) continue;
      const q = path.slice(0, i);
      if (this.lastKey !== null && compareBytes(this.lastKey, `${q}/`) >= 0) continue;
      if (this.probed.has(q) || this.recentFiles.includes(q)) continue;
      return q;
    }
    return null;
  }

  private insert(item: ListedItem): void {
    let lo = 0;
    let hi = this.held.length;
    // Most entries arrive in order: check the end first.
    const last = this.held[hi - 1];
    if (last === undefined || compareBytes(last.path, item.path) < 0) {
      this.held.push(item);
      return;
    }
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareBytes((this.held[mid] as ListedItem).path, item.path) < 0) lo = mid + 1;
      else hi = mid;
    }
    this.held.splice(lo, 0, item);
  }

  /** Drops bookkeeping for names whose subtree ("x/…") lies entirely before key `k`. */
  private forgetPassed(k: string): void {
    const passed = (x: string): boolean => compareBytes(k, `${x}0`) >= 0; // "0" follows "/"
    if (this.recentFiles.length > 0) this.recentFiles = this.recentFiles.filter((f) => !passed(f));
    for (const q of this.probed.keys()) if (passed(q)) this.probed.delete(q);
  }
}

function directoryItem(path: string): ListedItem {
  // Directory mtimes are null on S3, markers included, so a listing and a stat always agree.
  return { path, kind: 'directory', sizeBytes: 0, mtime: null, etag: null };
}

/** Proper ancestors of a relative path, shallowest first, the listed directory itself excluded. */
function ancestorDirs(path: string): string[] {
  const out: string[] = [];
  let i = path.indexOf('/');
  while (i !== -1) {
    out.push(path.slice(0, i));
    i = path.indexOf('/', i + 1);
  }
  return out;
}
