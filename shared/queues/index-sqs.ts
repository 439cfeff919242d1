// The SQS side of the reconcile queue, for the Lambdas that consume it.
export { processReconcileBatch, requireSqsRouted, sqsRouted, type ReconcileBatchOptions } from './sqs-consumer.ts';
