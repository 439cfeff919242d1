// What the shells may use of the queue adapters: the prefix pattern (light). BullMQ is in
// index-bullmq.ts and the SQS consumer in index-sqs.ts, so that each importer loads its own.
export { QUEUE_PREFIX_PATTERN } from './prefix.ts';
