import { z } from 'zod';
import { FilestoreError } from '../../errors.ts';

/**
 * The SQS message bodies an S3-event queue receives, validated leniently: only the fields the
 * handler reads are checked, everything else (requester, source IP — IPv6 included —, owner,
 * version ids, new fields of later event versions) passes untouched. Powertools' parser schema
 * is stricter (it rejects `s3:TestEvent` and IPv6 requesters) and such records would loop
 * into the DLQ.
 *
 * Two shapes:
 * - direct S3 → SQS: `{"Records":[…]}`, keys form-URL-encoded (`+` is a space)
 *   (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html),
 *   or the `s3:TestEvent` S3 sends when notifications are configured;
 * - S3 → EventBridge → SQS: one EventBridge event, `detail.object.key` as stored, not encoded
 *   (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html).
 */

const sequencer = z.string().regex(/^[0-9A-Fa-f]{1,128}$/);

const directRecord = z.object({
  eventSource: z.string().optional(),
  eventName: z.string(),
  s3: z.object({
    bucket: z.object({ name: z.string().min(1) }),
    object: z.object({
      key: z.string(),
      size: z.number().optional(),
      eTag: z.string().optional(),
      sequencer: sequencer.optional(),
    }),
  }),
});

export const directNotificationSchema = z.object({ Records: z.array(directRecord) });

export const testEventSchema = z.object({ Event: z.literal('s3:TestEvent'), Bucket: z.string().optional() });

export const eventBridgeNotificationSchema = z.object({
  source: z.literal('aws.s3'),
  'detail-type': z.string(),
  detail: z.object({
    bucket: z.object({ name: z.string().min(1) }),
    object: z.object({
      key: z.string(),
      size: z.number().optional(),
      etag: z.string().optional(),
      sequencer: sequencer.optional(),
    }),
    reason: z.string().optional(),
  }),
});

/** One object change as a notification reports it, key decoded. */
export interface S3Change {
  bucket: string;
  key: string;
  /** What the event says happened; the handler looks (HEAD) before it believes it. */
  change: 'created' | 'deleted';
  sequencer: string | undefined;
  eventName: string;
  /**
   * The object's size and bare ETag as a creation event reports them (both present, or
   * neither): when they match the key's live ACTIVE file row, the event is of a version the
   * catalogue already holds and needs no look at storage (newest.ts `dropStored`).
   */
  reported?: { sizeBytes: number; etag: string } | undefined;
}

/** What one SQS message body holds: S3's test message (nothing to do) or object changes. */
export type S3Notification = { kind: 'test' } | { kind: 'changes'; changes: S3Change[] };

/**
 * Decodes a key of the direct shape: `+` is a space, then percent-decoding (S3 encodes keys as
 * an HTML form does). A key that does not decode (a stray `%`) is refused: no object has it.
 */
export function decodeEventKey(encoded: string): string {
  try {
    return decodeURIComponent(encoded.replace(/\+/g, ' '));
  } catch {
    throw new FilestoreError('VALIDATION_ERROR', `S3 event key ${JSON.stringify(encoded.slice(0, 200))} is not valid form-URL-encoding`);
  }
}

/** Parses one SQS message body; throws VALIDATION_ERROR for anything else (the record fails, ends in the DLQ). */
export function parseNotification(body: string): S3Notification {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw new FilestoreError('VALIDATION_ERROR', 'SQS message body is not JSON; expected an S3 event notification');
  }
  if (testEventSchema.safeParse(json).success) return { kind: 'test' };
  const direct = directNotificationSchema.safeParse(json);
  if (direct.success) {
    return {
      kind: 'changes',
      changes: direct.data.Records.map((r) => ({
        bucket: r.s3.bucket.name,
        key: decodeEventKey(r.s3.object.key),
        change: r.eventName.startsWith('ObjectRemoved') || r.eventName.startsWith('s3:ObjectRemoved') ? 'deleted' : 'created',
        sequencer: r.s3.object.sequencer,
        eventName: r.eventName,
        reported: reportedObject(r.s3.object.size, r.s3.object.eTag),
      })),
    };
  }
  const bridged = eventBridgeNotificationSchema.safeParse(json);
  if (bridged.success) {
    const d = bridged.data;
    return {
      kind: 'changes',
      changes: [
        {
          bucket: d.detail.bucket.name,
          key: d.detail.object.key,
          change: d['detail-type'] === 'Object Deleted' ? 'deleted' : 'created',
          sequencer: d.detail.object.sequencer,
          eventName: d['detail-type'],
          reported: reportedObject(d.detail.object.size, d.detail.object.etag),
        },
      ],
    };
  }
  throw new FilestoreError('VALIDATION_ERROR', 'SQS message body is neither an S3 event notification ({"Records":[…]}), an s3:TestEvent nor an S3 EventBridge event', {
    issues: direct.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`),
  });
}

/** Size and ETag as an event reports them, the ETag without quotes; undefined unless both are there (a deletion has neither). */
function reportedObject(size: number | undefined, etag: string | undefined): S3Change['reported'] {
  if (size === undefined || etag === undefined) return undefined;
  const bare = etag.replace(/^"|"$/g, '');
  if (bare === '' || !Number.isSafeInteger(size) || size < 0) return undefined;
  return { sizeBytes: size, etag: bare };
}
