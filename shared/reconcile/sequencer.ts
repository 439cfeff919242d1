/**
 * The `sequencer` of S3 event notifications: a hex string that orders the events of one key
 * (never across keys). AWS: "compare the strings after right-padding the shorter one with
 * zeros; the greater is the later event; equal strings are the same event"
 * (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html).
 * Case is not significant. The catalogue keeps the last one applied per node
 * (`nodes.sequencer`, shared/catalogue/node-writes.ts `recordSequencers`, the same rule in SQL).
 */

const HEX = /^[0-9A-Fa-f]+$/;

/** True for a non-empty hex string, the only shape S3 sends. */
export function isSequencer(value: unknown): value is string {
  return typeof value === 'string' && value.length <= 128 && HEX.test(value);
}

/** -1, 0 or 1 as event `a` is earlier than, the same as, or later than event `b` of the same key. */
export function compareSequencers(a: string, b: string): -1 | 0 | 1 {
  const width = Math.max(a.length, b.length);
  const x = a.toUpperCase().padEnd(width, '0');
  const y = b.toUpperCase().padEnd(width, '0');
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Whether an event with `sequencer` is newer than the one a node stored (none stored: every event is). */
export function isNewerSequencer(sequencer: string, stored: string | null | undefined): boolean {
  return stored == null || compareSequencers(sequencer, stored) > 0;
}

/** The newest of several sequencers of one key (a batch holding duplicates and reorderings). */
export function newestSequencer(sequencers: readonly string[]): string | undefined {
  let newest: string | undefined;
  for (const s of sequencers) if (newest === undefined || compareSequencers(s, newest) > 0) newest = s;
  return newest;
}
