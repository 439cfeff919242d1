import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { FilestoreError } from '../shared/index.ts';
import { processS3Events } from '../shared/reconcile/s3-events/index.ts';
import { lambdaHandler, logger } from './support/powertools.ts';

/**
 * SQS batch of S3 event notifications (direct S3 → SQS, or S3 → EventBridge → SQS) → the
 * single keys reconciled inline; `batchItemFailures` lists the records to retry (the event
 * source mapping needs FunctionResponseTypes: ReportBatchItemFailures). SPEC §10.
 */
export const handler = lambdaHandler<SQSEvent, SQSBatchResponse>('s3-events', (event, context, { core }) =>
  processS3Events(core, event, context, { s3MissingGraceMs: missingGraceMs(process.env.FILESTORE_S3_MISSING_GRACE_MS), log: logger }),
);

/** FILESTORE_S3_MISSING_GRACE_MS (SPEC §8, default 2000): a deleted key's second look waits it before MISSING. */
function missingGraceMs(value: string | undefined): number {
  if (value === undefined || value === '') return 2_000;
  const ms = Number(value);
  if (!Number.isInteger(ms) || ms < 0 || ms > 600_000) throw new FilestoreError('CONFIG_ERROR', `FILESTORE_S3_MISSING_GRACE_MS must be an integer of milliseconds 0-600000, not ${JSON.stringify(value)}`);
  return ms;
}
