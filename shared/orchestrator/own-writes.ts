import type { EntryStat } from '../backends/types.ts';

/**
 * What this process's own writes left on storage, by mount and path, for a short while: the
 * stat each `writeFile` recorded in the catalogue with its commit. The watcher of a local mount
 * (agent/watch/drift-sink.ts) sees every such write as a change on disk; a path whose storage
 * still looks exactly like this (kind, size, mtime, mode, owner, link target: what drift
 * compares with a catalogue row) matches the row the write committed, so judging it against
 * the catalogue could only find it "as recorded" — after a transaction that try-locks it (and
 * holds its key against the next writers) and touches its row. Such paths are left out.
 *
 * Anything else a command of this process commits on a mount (mkdir, delete, move, copy,
 * metadata) forgets the whole mount: those change rows the entries here may speak for. Entries
 * live TTL_MS at most, and at most MAX_ENTRIES are kept (the oldest go first).
 */
const TTL_MS = 60_000;
const MAX_ENTRIES = 20_000;

interface Entry {
  stat: EntryStat;
  until: number;
}

export class OwnWrites {
  private readonly byMount = new Map<string, Map<string, Entry>>();
  private size = 0;

  /** A write of `path` committed with this stat. */
  record(mountId: string, path: string, stat: EntryStat, now = Date.now()): void {
    let paths = this.byMount.get(mountId);
    if (!paths) this.byMount.set(mountId, (paths = new Map()));
    if (paths.delete(path)) this.size--;
    paths.set(path, { stat, until: now + TTL_MS });
    this.size++;
    if (this.size > MAX_ENTRIES) this.trim();
  }

  /** Something else changed the mount's rows: nothing recorded for it speaks for them any more. */
  forget(mountId: string): void {
    const paths = this.byMount.get(mountId);
    if (!paths) return;
    this.size -= paths.size;
    this.byMount.delete(mountId);
  }

  /** Whether a write of `path` is recorded (a look at storage can tell whether it still stands). */
  knows(mountId: string, path: string): boolean {
    return this.byMount.get(mountId)?.has(path) ?? false;
  }

  /** True when `seen` (storage now) is exactly what this process's last write of `path` committed. */
  matches(mountId: string, path: string, seen: EntryStat | null | undefined, now = Date.now()): boolean {
    const entry = this.byMount.get(mountId)?.get(path);
    if (!entry || !seen) return false;
    if (entry.until < now) {
      this.byMount.get(mountId)?.delete(path);
      this.size--;
      return false;
    }
    return sameStat(entry.stat, seen);
  }

  private trim(): void {
    // Maps iterate in insertion order: the oldest entries of each mount go first.
    for (const paths of this.byMount.values()) {
      for (const key of paths.keys()) {
        if (this.size <= MAX_ENTRIES * 0.9) return;
        paths.delete(key);
        this.size--;
      }
    }
  }
}

/** The fields drift compares (reconcile strategies' `differs` for local mounts), all equal. */
function sameStat(a: EntryStat, b: EntryStat): boolean {
  return (
    a.kind === b.kind &&
    a.sizeBytes === b.sizeBytes &&
    (a.mtime?.getTime() ?? null) === (b.mtime?.getTime() ?? null) &&
    a.mode === b.mode &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    a.symlinkTarget === b.symlinkTarget &&
    a.etag === b.etag
  );
}
