import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compareBytes } from '../shared/backends/s3/keys.ts';
import type { RawEntry } from '../shared/backends/s3/listing.ts';
import { PathOrderedListing } from '../shared/backends/s3/path-order.ts';

/**
 * PathOrderedListing turns S3 key order into path order. The model below states the expected
 * listing directly (every file, every implied directory once, files shadow directories, byte
 * order), and the orderer must match it for any key set and any buffer bound.
 */

// '-', '.' and ' ' sort before '/', '0' right after it; 'B' before 'a'; 'é' and '😀' are multi-byte.
const segment = fc
  .array(fc.constantFrom('a', 'b', 'B', '-', '.', ' ', '0', 'é', '\u{ff5e}', '\u{1f600}'), { minLength: 1, maxLength: 3 })
  .map((cs) => cs.join(''))
  .filter((s) => s !== '.' && s !== '..');
const key = fc
  .tuple(fc.array(segment, { minLength: 1, maxLength: 3 }), fc.boolean())
  .map(([segs, marker]) => segs.join('/') + (marker ? '/' : ''));
const keySet = fc.uniqueArray(key, { maxLength: 30 });

type Item = [string, 'file' | 'directory'];

function ancestors(path: string): string[] {
  const parts = path.split('/');
  return parts.slice(0, -1).map((_, i) => parts.slice(0, i + 1).join('/'));
}

function expectedRecursive(keys: string[]): Item[] {
  const files = new Set(keys.filter((k) => !k.endsWith('/')));
  const dirs = new Set<string>();
  for (const k of keys) {
    const path = k.endsWith('/') ? k.slice(0, -1) : k;
    for (const a of ancestors(path)) dirs.add(a);
    if (k.endsWith('/')) dirs.add(path);
  }
  const shadowed = (p: string) => ancestors(p).some((a) => files.has(a));
  const items: Item[] = [
    ...[...files].filter((f) => !shadowed(f)).map((f): Item => [f, 'file']),
    ...[...dirs].filter((d) => !files.has(d) && !shadowed(d)).map((d): Item => [d, 'directory']),
  ];
  return items.sort((a, b) => compareBytes(a[0], b[0]));
}

function expectedChildren(keys: string[]): Item[] {
  const files = new Set(keys.filter((k) => !k.includes('/')));
  const dirs = new Set(keys.filter((k) => k.includes('/')).map((k) => k.slice(0, k.indexOf('/'))));
  const items: Item[] = [
    ...[...files].map((f): Item => [f, 'file']),
    ...[...dirs].filter((d) => !files.has(d)).map((d): Item => [d, 'directory']),
  ];
  return items.sort((a, b) => compareBytes(a[0], b[0]));
}

/** What ListObjectsV2 returns for these keys, in order: all keys, or direct objects + common prefixes. */
function s3Listing(keys: string[], delimited: boolean): RawEntry[] {
  const entries = new Map<string, RawEntry>();
  for (const k of keys) {
    const i = k.indexOf('/');
    if (delimited && i !== -1) {
      const p = k.slice(0, i + 1);
      entries.set(p, { type: 'prefix', key: p });
    } else {
      entries.set(k, { type: 'object', key: k, sizeBytes: 1, lastModified: null, etag: null });
    }
  }
  return [...entries.values()].sort((a, b) => compareBytes(a.key, b.key));
}

async function run(keys: string[], delimited: boolean, maxBuffered: number): Promise<{ items: Item[]; probes: number }> {
  let probes = 0;
  const ordered = new PathOrderedListing({
    maxBuffered,
    probe: async (dir) => {
      probes++;
      return keys.some((k) => k.startsWith(`${dir}/`));
    },
  });
  const items: Item[] = [];
  for (const entry of s3Listing(keys, delimited)) {
    for (const item of await ordered.push(entry)) items.push([item.path, item.kind]);
  }
  for (const item of ordered.finish()) items.push([item.path, item.kind]);
  return { items, probes };
}

describe('S3 listing order', () => {
  it('emits "a" before "a-b" and "a.b" although S3 reveals it only at "a/"', async () => {
    const keys = ['a-b', 'a.b', 'a/x', 'a0'];
    expect((await run(keys, false, 1000)).items).toEqual([
      ['a', 'directory'],
      ['a-b', 'file'],
      ['a.b', 'file'],
      ['a/x', 'file'],
      ['a0', 'file'],
    ]);
    expect((await run(keys, true, 1000)).items.map(([p]) => p)).toEqual(['a', 'a-b', 'a.b', 'a0']);
  });

  it('settles a held entry with a probe once the buffer bound is reached', async () => {
    const keys = ['x-1', 'x-2', 'x-3', 'x/y'];
    const { items, probes } = await run(keys, false, 1);
    expect(items.map(([p]) => p)).toEqual(['x', 'x-1', 'x-2', 'x-3', 'x/y']);
    expect(probes).toBe(1);
  });

  it('a recursive listing equals the model for any keys and any buffer bound', async () => {
    await fc.assert(
      fc.asyncProperty(keySet, fc.constantFrom(0, 1, 3, 1000), async (keys, maxBuffered) => {
        expect((await run(keys, false, maxBuffered)).items).toEqual(expectedRecursive(keys));
      }),
      { numRuns: 400 },
    );
  });

  it('a delimited listing of direct children equals the model for any keys and any buffer bound', async () => {
    await fc.assert(
      fc.asyncProperty(keySet, fc.constantFrom(0, 1, 3, 1000), async (keys, maxBuffered) => {
        expect((await run(keys, true, maxBuffered)).items).toEqual(expectedChildren(keys));
      }),
      { numRuns: 400 },
    );
  });
});
