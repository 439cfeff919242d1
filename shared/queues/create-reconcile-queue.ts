import { BullMqReconcileQueue, type BullMqReconcileQueueOptions } from './bullmq-queue.ts';
import { InlineReconcileQueue } from './inline-queue.ts';
import type { ReconcileQueue } from '../reconcile/queue.ts';
import { RoutedReconcileQueue, SqsReconcileQueue, type SqsQueueSetup } from './sqs-queue.ts';

export interface CreateReconcileQueueOptions extends BullMqReconcileQueueOptions {
  /**
   * FILESTORE_RECONCILE_QUEUE_URL (AWS): S3 mounts' jobs go to this SQS queue, consumed by the
   * reconcile Lambda; local mounts' jobs still go to BullMQ (or in-process), to their agent.
   */
  sqs?: SqsQueueSetup | undefined;
}

/** `redisUrl` 'inline' runs jobs in this process (one process only); otherwise BullMQ on that Redis; with `sqs`, S3 mounts' jobs go there instead. */
export function createReconcileQueue(redisUrl: string, options: CreateReconcileQueueOptions): ReconcileQueue {
  const local = redisUrl === 'inline' ? new InlineReconcileQueue(options) : new BullMqReconcileQueue(redisUrl, options);
  if (!options.sqs) return local;
  return new RoutedReconcileQueue(options.pool, new SqsReconcileQueue({ ...options, name: undefined }, options.sqs), local);
}
