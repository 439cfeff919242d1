import { BullMqReconcileQueue, type BullMqReconcileQueueOptions } from './bullmq-queue.ts';
import { InlineReconcileQueue } from './inline-queue.ts';
import type { ReconcileQueue } from './reconcile-queue.ts';

/** `redisUrl` 'inline' runs jobs in this process (one process only); otherwise BullMQ on that Redis. */
export function createReconcileQueue(redisUrl: string, options: BullMqReconcileQueueOptions): ReconcileQueue {
  return redisUrl === 'inline' ? new InlineReconcileQueue(options) : new BullMqReconcileQueue(redisUrl, options);
}
