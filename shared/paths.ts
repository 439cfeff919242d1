import { InvalidPathError } from './errors.ts';
import { hasLoneSurrogate } from './json-value.ts';

/** SPEC §2 limits. */
export const MAX_PATH_BYTES = 4096;
export const MAX_SEGMENT_BYTES = 255;

/**
 * Top-level name reserved for staging writes inside a local mount (same filesystem as the
 * target, so the final rename is atomic). Scans and watchers skip it; commands refuse it.
 */
export const STAGING_DIR = '.filestore-staging';

// C0 and C1 control characters, DEL included; NUL is the one that matters most.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Normalises a mount-relative path to its canonical form, or throws INVALID_PATH.
 * Canonical: NFC, no leading or trailing `/`, the mount root is `""`.
 * Every entry point (API, CLI, watcher, reconciliation) calls this and nothing else.
 */
export function normalizePath(input: unknown): string {
  if (typeof input !== 'string') throw new InvalidPathError('path must be a string');
  if (PLAIN.test(input) && input.length <= MAX_SEGMENT_BYTES) return normalizePlain(input) ?? normalizeAny(input);
  return normalizeAny(input);
}

// Printable ASCII without a backslash, at most one segment's length: NFC and UTF-8 byte
// counts are the identity here, so only the segment rules remain (the common, hot case).
const PLAIN = /^[\x20-\x5b\x5d-\x7e]*$/;

/**
 * True when `name` is a canonical segment of printable ASCII: joined to a canonical parent
 * path other than the mount root's staging name, it gives a canonical path if the whole stays
 * within MAX_PATH_BYTES. A listing checks each entry's name so, rather than normalising the
 * whole path again per entry (the common case; anything else goes through normalizePath).
 */
export function isPlainSegment(name: string): boolean {
  return name.length > 0 && name.length <= MAX_SEGMENT_BYTES && name !== '.' && name !== '..' && !name.includes('/') && PLAIN.test(name);
}

function normalizePlain(input: string): string | null {
  const p = input.replace(/^\/|\/$/g, '');
  if (p === '') return '';
  if (p.startsWith('/') || p.endsWith('/') || p.includes('//') || p === STAGING_DIR || p.startsWith(`${STAGING_DIR}/`)) return null;
  if (/(^|\/)\.\.?(\/|$)/.test(p)) return null;
  return p;
}

/** The general rules, for any input (exported for the test that checks the fast path against it). */
export function normalizeAny(input: string): string {
  if (CONTROL.test(input)) {
    throw new InvalidPathError('path must not contain NUL or other control characters');
  }
  if (input.includes('\\')) throw new InvalidPathError('path must not contain a backslash');
  if (hasLoneSurrogate(input)) throw new InvalidPathError('path must be valid Unicode: it holds a lone surrogate (e.g. the JSON escape \\ud800), which no file name can');
  let p = input.normalize('NFC');
  if (p.startsWith('/')) p = p.slice(1);
  if (p.endsWith('/')) p = p.slice(0, -1);
  if (p === '') return '';
  if (Buffer.byteLength(p, 'utf8') > MAX_PATH_BYTES) {
    throw new InvalidPathError(`path is longer than ${MAX_PATH_BYTES} bytes`);
  }
  const segments = p.split('/');
  if (segments[0] === STAGING_DIR) {
    throw new InvalidPathError(`"${STAGING_DIR}" is reserved for Filestore's staging area`);
  }
  for (const segment of segments) {
    if (segment === '') throw new InvalidPathError('path must not contain empty segments ("//")');
    if (segment === '.' || segment === '..') {
      throw new InvalidPathError('path must not contain "." or ".." segments');
    }
    if (Buffer.byteLength(segment, 'utf8') > MAX_SEGMENT_BYTES) {
      throw new InvalidPathError(`a path segment is longer than ${MAX_SEGMENT_BYTES} bytes`);
    }
  }
  return p;
}

/** Parent of a canonical path; the root's parent is null. */
export function parentOf(path: string): string | null {
  if (path === '') return null;
  const i = path.lastIndexOf('/');
  return i === -1 ? '' : path.slice(0, i);
}

/** Last segment of a canonical path ("" for the root). */
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** Joins canonical paths (either may be the root ""). */
export function joinPath(a: string, b: string): string {
  if (a === '') return b;
  if (b === '') return a;
  return `${a}/${b}`;
}

/** Ancestors of a canonical path from the root down, excluding the path itself. */
export function ancestorsOf(path: string): string[] {
  if (path === '') return [];
  const out = [''];
  let i = path.indexOf('/');
  while (i !== -1) {
    out.push(path.slice(0, i));
    i = path.indexOf('/', i + 1);
  }
  return out;
}

/** True when `path` is `dir` or lies under it. */
export function isSameOrDescendant(path: string, dir: string): boolean {
  return dir === '' || path === dir || path.startsWith(`${dir}/`);
}

/** Rewrites `path` (inside `from`) so that it lies at the same place inside `to`. */
export function rebase(path: string, from: string, to: string): string {
  if (path === from) return to;
  const rest = from === '' ? path : path.slice(from.length + 1);
  return joinPath(to, rest);
}

/**
 * The smallest string greater than every string that starts with `prefix`, in code-point
 * (= UTF-8 byte = COLLATE "C") order, so `path >= prefix AND path < upper` is an index
 * range scan. Returns null when no such bound exists (prefix is all U+10FFFF).
 */
export function prefixUpperBound(prefix: string): string | null {
  const cps = Array.from(prefix);
  while (cps.length > 0) {
    const last = cps.pop() as string;
    let cp = (last.codePointAt(0) as number) + 1;
    if (cp === 0xd800) cp = 0xe000; // skip the surrogate range
    if (cp <= 0x10ffff) return cps.join('') + String.fromCodePoint(cp);
  }
  return null;
}

/**
 * Compares two strings in the byte order of their UTF-8 encodings (COLLATE "C", the order S3
 * lists keys in) without encoding them: UTF-16 code units compare the same way except that
 * surrogates (D800–DFFF, code points above FFFF) must sort after E000–FFFF.
 */
export function comparePaths(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800) x += x >= 0xe000 ? -0x800 : 0x2000;
    if (y >= 0xd800) y += y >= 0xe000 ? -0x800 : 0x2000;
    return x - y;
  }
  return a.length - b.length;
}
