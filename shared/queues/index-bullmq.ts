// The BullMQ (Redis) reconcile queue, for the processes that consume it.
export { BullMqReconcileQueue } from './bullmq-queue.ts';
