import { Transform } from 'node:stream';
import { FilestoreError } from '../errors.ts';

/**
 * Passes on exactly `length` bytes and fails otherwise: a source that ends short fails at its
 * end, one that brings more fails on the chunk that would go past `length`, passing none of
 * it. Whatever reads through it gets the promised bytes or an error, never a body that
 * disagrees with the length it was announced with (HTTP: with its Content-Length, where
 * surplus bytes would be read as the next response on a kept-alive connection).
 */
export function exactLength(length: number, what: string): Transform {
  let passed = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      if (passed + chunk.length > length) {
        done(lengthError(what, length, `more than the ${length} bytes announced`));
        return;
      }
      passed += chunk.length;
      done(null, chunk);
    },
    flush(done) {
      done(passed === length ? null : lengthError(what, length, `${passed} of the ${length} bytes announced`));
    },
  });
}

const lengthError = (what: string, length: number, got: string) =>
  new FilestoreError('STORAGE_ERROR', `reading ${what} gave ${got}; it changed or the storage connection broke, read it again`, { expectedBytes: length });
