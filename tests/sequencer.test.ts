import fc from 'fast-check';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordSequencers } from '../shared/catalogue/node-writes.ts';
import { findSequencer } from '../shared/catalogue/nodes.ts';
import { compareSequencers, isNewerSequencer, isSequencer, newestSequencer } from '../shared/reconcile/sequencer.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, startFilestore, stopS3, type TestMount } from './support/filestore.ts';

/**
 * S3 event sequencers (shared/reconcile/sequencer.ts): hex strings of varying length and case
 * that order the events of one key. The rule, as AWS states it: right-pad the shorter with
 * zeros, compare; equal strings are the same event.
 */

const hexChar = fc.constantFrom(...'0123456789abcdefABCDEF'.split(''));
const sequencer = fc.array(hexChar, { minLength: 1, maxLength: 24 }).map((cs) => cs.join(''));
/** The number a sequencer stands for: a hex fraction, so trailing zeros change nothing. */
const valueOf = (s: string, width: number) => BigInt(`0x${s.padEnd(width, '0')}`);

describe('comparing sequencers', () => {
  it('orders as the hex fractions the sequencers stand for (case and trailing zeros aside)', () => {
    fc.assert(
      fc.property(sequencer, sequencer, (a, b) => {
        const width = Math.max(a.length, b.length);
        const x = valueOf(a, width);
        const y = valueOf(b, width);
        expect(compareSequencers(a, b)).toBe(x < y ? -1 : x > y ? 1 : 0);
      }),
    );
  });

  it('is a total order: antisymmetric, transitive, and equal exactly for the same event', () => {
    fc.assert(
      fc.property(sequencer, sequencer, sequencer, (a, b, c) => {
        expect(compareSequencers(a, b)).toBe(-compareSequencers(b, a) || 0);
        if (compareSequencers(a, b) <= 0 && compareSequencers(b, c) <= 0) expect(compareSequencers(a, c)).toBeLessThanOrEqual(0);
        expect(compareSequencers(a, a.toLowerCase())).toBe(0);
        expect(compareSequencers(a, `${a}000`)).toBe(0);
        expect(compareSequencers(`${a}1`, a)).toBe(1);
      }),
    );
  });

  it('keeps the newest of a shuffled batch with duplicates; an event is newer than none stored', () => {
    fc.assert(
      fc.property(fc.array(sequencer, { minLength: 1, maxLength: 10 }), (list) => {
        const newest = newestSequencer(list) as string;
        for (const s of list) expect(compareSequencers(newest, s)).toBeGreaterThanOrEqual(0);
        expect(isNewerSequencer(newest, null)).toBe(true);
        expect(isNewerSequencer(newest, newest.toUpperCase())).toBe(false);
      }),
    );
    expect(compareSequencers('0055AED6DCD90281E5', '0055AED6DCD90281E6')).toBe(-1);
    expect(compareSequencers('0055AED6DCD90281E5', '0055aed6dcd90281e5000')).toBe(0);
    expect(compareSequencers('0055AED6DCD90281E5F', '0055AED6DCD90281E6')).toBe(-1);
    expect(isSequencer('0055AED6DCD90281E5')).toBe(true);
    expect(isSequencer('')).toBe(false);
    expect(isSequencer('12g4')).toBe(false);
  });
});

describe('the catalogue keeps the newest sequencer applied to an S3 node', () => {
  let core: Filestore;
  let t: TestMount;
  beforeAll(async () => {
    core = await startFilestore({ redisUrl: 'inline', recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
    t = await createTestMount(core, 's3');
  });
  afterAll(async () => {
    await core?.close();
    await stopS3();
  });

  it('SQL applies the same rule: a stored sequencer only moves to a newer one, whatever order events come in', async () => {
    await core.orchestrator.writeFile(t.mount.id, { path: 'k.txt' }, Readable.from([Buffer.from('k')]));
    const { rows: before } = await core.pool.query('SELECT version, updated_at FROM filestore.nodes WHERE mount_id = $1 AND path = $2 AND deleted_at IS NULL', [t.mount.id, 'k.txt']);
    await fc.assert(
      fc.asyncProperty(fc.array(sequencer, { minLength: 1, maxLength: 8 }), async (events) => {
        await core.pool.query('UPDATE filestore.nodes SET sequencer = NULL WHERE mount_id = $1 AND path = $2', [t.mount.id, 'k.txt']);
        for (const s of events) await recordSequencers(core.pool, t.mount.id, [{ path: 'k.txt', sequencer: s }]);
        const stored = (await findSequencer(core.pool, t.mount.id, 'k.txt')) as string;
        expect(compareSequencers(stored, newestSequencer(events) as string)).toBe(0);
        // The first of the newest ones kept: a duplicate (same event, other spelling) changes nothing.
        expect(stored).toBe(events.find((s) => compareSequencers(s, stored) === 0));
      }),
      { numRuns: 40 },
    );
    // Not a change of what the node records: no version, and `updated_at` (what the write guards read) untouched.
    const { rows: after } = await core.pool.query('SELECT version, updated_at FROM filestore.nodes WHERE mount_id = $1 AND path = $2 AND deleted_at IS NULL', [t.mount.id, 'k.txt']);
    expect(after).toEqual(before);
    expect(await findSequencer(core.pool, t.mount.id, 'no-such-key')).toBeUndefined();
  });
});
