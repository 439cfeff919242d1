import { findSequencers } from '../../catalogue/nodes.ts';
import type { Queryable } from '../../db/pool.ts';
import type { DriftChange } from '../drift.ts';
import { compareSequencers, isNewerSequencer } from '../sequencer.ts';

/** One key of one mount as a batch reports it: its newest event. */
export interface KeyChange {
  path: string;
  change: DriftChange;
  /** The newest sequencer the batch carries for the key (undefined: its events carried none). */
  sequencer: string | undefined;
}

/**
 * Folds the events of a batch into the newest per key: duplicates (equal sequencers) and older
 * events of the same key are subsumed by the newest, whose HEAD sees at least as late a state.
 * An event without a sequencer never hides one with it.
 */
export function newestPerKey(events: Iterable<KeyChange>): Map<string, KeyChange> {
  const newest = new Map<string, KeyChange>();
  for (const e of events) {
    const held = newest.get(e.path);
    if (held === undefined || (e.sequencer !== undefined && (held.sequencer === undefined || compareSequencers(e.sequencer, held.sequencer) > 0))) newest.set(e.path, e);
  }
  return newest;
}

/**
 * Leaves out the keys whose newest event is not newer than the sequencer their live node
 * stored (already applied, or found as recorded: a redelivery, a late older event). Keys
 * without a live node or without a sequencer are kept: only a look at storage can tell.
 */
export async function dropApplied(q: Queryable, mountId: string, keys: ReadonlyMap<string, KeyChange>): Promise<{ kept: KeyChange[]; dropped: string[] }> {
  const withSequencer = [...keys.values()].filter((k) => k.sequencer !== undefined).map((k) => k.path);
  const stored = await findSequencers(q, mountId, withSequencer);
  const kept: KeyChange[] = [];
  const dropped: string[] = [];
  for (const k of keys.values()) {
    if (k.sequencer !== undefined && !isNewerSequencer(k.sequencer, stored.get(k.path))) dropped.push(k.path);
    else kept.push(k);
  }
  return { kept, dropped };
}
