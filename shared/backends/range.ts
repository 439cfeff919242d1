import { FilestoreError } from '../errors.ts';
import type { ByteRange, RangeRequest } from './types.ts';

/**
 * The bytes a range asks for in a file of `size` bytes (end clamped to the last byte);
 * RANGE_NOT_SATISFIABLE (details.sizeBytes, for `Content-Range: bytes *\/size`) when none of
 * them exist: a start at or past the end, a suffix of 0 bytes, any range of an empty file.
 */
export function resolveRange(range: RangeRequest, size: number): Required<ByteRange> {
  assertRangeRequest(range);
  if ('suffixLength' in range) {
    if (range.suffixLength === 0 || size === 0) throw rangeNotSatisfiable(size);
    return { start: Math.max(0, size - range.suffixLength), end: size - 1 };
  }
  if (range.start >= size) throw rangeNotSatisfiable(size);
  return { start: range.start, end: Math.min(range.end ?? size - 1, size - 1) };
}

export function rangeNotSatisfiable(size: number): FilestoreError {
  return new FilestoreError('RANGE_NOT_SATISFIABLE', `the file has ${size} bytes; ask for a range inside it`, { sizeBytes: size });
}

/** A range a caller built must be whole numbers with 0 <= start <= end (a suffix: >= 0). */
export function assertRangeRequest(range: RangeRequest): void {
  const whole = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0;
  const ok =
    'suffixLength' in range
      ? whole(range.suffixLength)
      : whole(range.start) && (range.end === undefined || (whole(range.end) && range.end >= range.start));
  if (!ok) {
    throw new FilestoreError('VALIDATION_ERROR', 'a byte range needs 0 <= start <= end (inclusive, whole numbers)', { range });
  }
}
