import { z } from 'zod';
import { DEFAULT_OUTBOX_RETENTION_MS } from '../catalogue/outbox-retention.ts';

/**
 * The shortest FILESTORE_OUTBOX_RETENTION accepted: far above the moments between an event's
 * publication and its reading by the event streams' tail, so pruning never takes an event
 * before a live stream has read it.
 */
export const MIN_OUTBOX_RETENTION_MS = 60_000;

const UNIT_MS: Record<string, number> = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1_000, '': 1_000 };

/** FILESTORE_OUTBOX_RETENTION: `7d`, `12h`, `30m`, `3600s` or a plain number of seconds, as milliseconds (default 7 days). */
export const OutboxRetention = z
  .string()
  .optional()
  .transform((v, ctx) => {
    if (v === undefined) return DEFAULT_OUTBOX_RETENTION_MS;
    const m = /^\s*(\d{1,9})\s*([dhms]?)\s*$/i.exec(v);
    const ms = m ? Number(m[1]) * (UNIT_MS[(m[2] ?? '').toLowerCase()] as number) : NaN;
    if (!(ms >= MIN_OUTBOX_RETENTION_MS)) {
      ctx.addIssue({
        code: 'custom',
        message: `"${v}": expected how long published events are kept, such as 7d, 12h, 30m, 3600s or a number of seconds (at least 60 s)`,
      });
      return z.NEVER;
    }
    return ms;
  });
