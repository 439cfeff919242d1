import type { EntryStat } from './types.ts';

/**
 * Entries and catalogue rows as lines of text, for the audit's comparison: a catalogue row
 * of an ACTIVE node whose line begins with an entry's comparable line records exactly what
 * storage holds, so the audit counts it unchanged without building either object. The
 * catalogue writes its lines in SQL (catalogue/nodes.ts SCOPE_LINE), the walker thread
 * writes entry lines (local/walker.ts); both follow `comparableFields`.
 */

const hex = (s: string) => Buffer.from(s, 'utf8').toString('hex');
/** A nullable field as line text: NULL is empty (as SQL concat writes it). */
export const text = (v: number | string | null | undefined): string => (v === null || v === undefined ? '' : String(v));

/**
 * The comparable fields of an entry or node, each followed by a tab: size only for files, the
 * mtime in whole milliseconds except for directories (whose mtime moves with every entry
 * added or removed: not drift), owner and mode, etag, a symlink's target hex-encoded. The
 * catalogue writes the same fields the same way (catalogue/nodes.ts SCOPE_LINE).
 */
export function comparableFields(
  kind: string,
  sizeBytes: number,
  mtimeMs: number | null,
  mode: number | null,
  uid: number | null,
  gid: number | null,
  etag: string | null,
  target: string | null,
): string {
  return (
    `${kind}\t${kind === 'file' ? sizeBytes : 0}\t${kind !== 'directory' && mtimeMs !== null ? mtimeMs : ''}\t` +
    `${text(mode)}\t${text(uid)}\t${text(gid)}\t${text(etag)}\t${kind === 'symlink' && target !== null ? hex(target) : ''}\t`
  );
}

/** `path \t ACTIVE \t <comparable fields>`: how the catalogue line of an ACTIVE node recording exactly this entry begins. */
export function comparableLine(e: EntryStat): string {
  const ms = e.mtime === null ? null : e.mtime.getTime();
  return `${e.path}\tACTIVE\t${comparableFields(e.kind, e.sizeBytes, ms, e.mode, e.uid, e.gid, e.etag, e.symlinkTarget)}`;
}

/** An entry as one line: its comparable line, then its mtime (what a directory's comparable fields leave out). */
export function entryLine(e: EntryStat): string {
  return `${comparableLine(e)}${e.mtime === null ? '' : e.mtime.getTime()}`;
}

/** A listed entry as the comparison sees it: `line` is its comparable line; `entry` is built when needed. */
export interface StorageRow {
  path: string;
  line: string;
  /** The whole `entryLine` (with the mtime) when the row came as text. */
  full?: string | undefined;
  entry?: EntryStat | undefined;
}

export function rowOfEntry(e: EntryStat): StorageRow {
  return { path: e.path, line: comparableLine(e), entry: e };
}

/** The kind of a listed row, read off its line (`path \t ACTIVE \t kind \t …`). */
export function rowKind(row: StorageRow): string {
  const at = row.path.length + 8;
  return row.line.slice(at, row.line.indexOf('\t', at));
}

/** A row from an `entryLine`. */
export function rowOfLine(l: string): StorageRow {
  const cut = l.lastIndexOf('\t') + 1;
  return { path: l.slice(0, l.indexOf('\t')), line: cut === l.length ? l : l.slice(0, cut), full: l };
}

/** The entry a row stands for (parsed from its line when it came from the walker thread). */
export function rowEntry(row: StorageRow): EntryStat {
  if (row.entry) return row.entry;
  const f = (row.full ?? row.line).split('\t');
  const kind = f[2] as EntryStat['kind'];
  const mtime = f[10] !== undefined && f[10] !== '' ? new Date(Number(f[10])) : f[4] !== '' ? new Date(Number(f[4])) : null;
  const num = (s: string | undefined) => (s === undefined || s === '' ? null : Number(s));
  const entry: EntryStat = {
    path: row.path,
    kind,
    sizeBytes: Number(f[3]),
    mode: num(f[5]),
    uid: num(f[6]),
    gid: num(f[7]),
    mtime,
    etag: f[8] === '' || f[8] === undefined ? null : f[8],
    symlinkTarget: kind === 'symlink' && f[9] ? Buffer.from(f[9], 'hex').toString('utf8') : null,
  };
  row.entry = entry;
  return entry;
}

