import { normalizePath } from '../paths.ts';

/**
 * Names a listing passes over because the catalogue cannot hold them, and why:
 * - `invalid_name`: a control character (newline, tab…), a backslash, an empty, "." or ".."
 *   segment, a name or path too long (SPEC §2);
 * - `not_utf8`: bytes that are not UTF-8 (local disks);
 * - `not_nfc`: a name that is not in NFC, the canonical form (its NFC twin would be a
 *   different file on disk);
 * - `unsupported_kind`: FIFOs, sockets and devices (local disks).
 * Filestore's own staging entries are hidden on purpose and are not counted.
 */
export type SkipReason = 'invalid_name' | 'not_utf8' | 'not_nfc' | 'unsupported_kind';

/** What a listing passed over: counts per reason and a few of the paths, escaped (no control characters). */
export interface SkippedSummary {
  byReason: Partial<Record<SkipReason, number>>;
  sample: string[];
}

/** Paths kept as examples per listing (and per job). */
export const SKIPPED_SAMPLE = 5;

/** Counts of skipped names, kept off the per-entry path of a listing: only a skip touches it. */
export class SkippedNames {
  total = 0;
  readonly byReason: Partial<Record<SkipReason, number>> = {};
  readonly sample: string[] = [];

  /** One skipped name; `escaped` is called only while the sample has room. */
  add(reason: SkipReason, escaped: () => string): void {
    this.total++;
    this.byReason[reason] = (this.byReason[reason] ?? 0) + 1;
    if (this.sample.length < SKIPPED_SAMPLE) this.sample.push(escaped());
  }

  merge(s: SkippedSummary): void {
    for (const [reason, n] of Object.entries(s.byReason) as Array<[SkipReason, number]>) {
      this.total += n;
      this.byReason[reason] = (this.byReason[reason] ?? 0) + n;
    }
    for (const p of s.sample) if (this.sample.length < SKIPPED_SAMPLE) this.sample.push(p);
  }

  summary(): SkippedSummary {
    return { byReason: { ...this.byReason }, sample: [...this.sample] };
  }
}

// The trailer travels in band, as the last batch of a listing (an empty array carrying the
// summary), so it passes through every wrapper of a Backend (instrumented, lazy) untouched.
const TRAILER = Symbol.for('filestore.listing.skipped');

/** The last batch of a listing that passed over names: empty, carrying what it skipped. */
export function skippedTrailer<T>(skipped: SkippedNames): T[] {
  return Object.assign([] as T[], { [TRAILER]: skipped.summary() });
}

/** What a listing's trailer says it skipped; undefined for any other batch. */
export function skippedOf(batch: readonly unknown[]): SkippedSummary | undefined {
  return batch.length === 0 ? (batch as { [TRAILER]?: SkippedSummary })[TRAILER] : undefined;
}

/** Why a path that is not canonical cannot be catalogued. */
export function skipReasonOf(path: string): SkipReason {
  try {
    return normalizePath(path) === path ? 'invalid_name' : 'not_nfc';
  } catch {
    return 'invalid_name';
  }
}

const ESCAPES: Record<string, string> = { '\n': '\\n', '\t': '\\t', '\r': '\\r', '\\': '\\\\' };

/** A path for a log line or a job result: control characters (C0, DEL, C1) and backslashes escaped as in JSON. */
export function escapePath(path: string): string {
  return path.replace(/[\u0000-\u001f\u007f-\u009f\\]/g, (ch) => ESCAPES[ch] ?? `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Raw name bytes that are not UTF-8, printable: ASCII as it is, every other byte as \xNN. */
export function escapeBytes(raw: Uint8Array): string {
  let out = '';
  for (const b of raw) out += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return out;
}
