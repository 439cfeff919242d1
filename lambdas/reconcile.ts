import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { reconcilerOptionsFromEnv } from '../shared/reconcile/index-lambda.ts';
import { processReconcileBatch, requireSqsRouted, type ReconcileBatchOptions } from '../shared/queues/index-sqs.ts';
import { lambdaHandler, logger } from './support/powertools.ts';

export type ReconcileHandlerOptions = Omit<ReconcileBatchOptions, 'queue' | 'onRecord'> & { marginMs?: number | undefined };

/**
 * The consumer of the reconcile queue (FILESTORE_RECONCILE_QUEUE_URL, SQS event source with
 * ReportBatchItemFailures): runs the reconcile jobs of S3 mounts that POST /v1/reconcile,
 * follow-ups and S3 audits queued, with the audit Lambda's run code (shared/reconcile/).
 */
export function createReconcileHandler(o: ReconcileHandlerOptions = {}) {
  return lambdaHandler<SQSEvent, SQSBatchResponse>('reconcile', async (event, context, lc) => {
    const { core, queue } = requireSqsRouted(lc.core);
    return processReconcileBatch(core, event, { remainingMs: () => context.getRemainingTimeInMillis(), marginMs: o.marginMs }, {
      ...o,
      reconciler: { ...reconcilerOptionsFromEnv(), ...o.reconciler },
      queue,
      onRecord: (record, run, error) =>
        (error ? logger.warn : logger.info).call(logger, 'reconcile message', {
          messageId: record.messageId,
          jobId: run?.job?.id,
          outcome: run?.outcome,
          ...(error ? { error: (error as Error).message } : {}),
        }),
    });
  });
}

export const handler = createReconcileHandler();
