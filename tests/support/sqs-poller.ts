import { setTimeout as sleep } from 'node:timers/promises';
import { DeleteMessageBatchCommand, GetQueueAttributesCommand, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { lambdaContext } from './lambda-context.ts';

/**
 * What Lambda's SQS event source mapping does, against fauxqs: receive up to `batchSize`
 * messages, build the SQSEvent it would (messageId, receiptHandle, body, attributes with
 * ApproximateReceiveCount, md5OfBody, eventSource "aws:sqs", eventSourceARN, awsRegion), call
 * the handler, and with ReportBatchItemFailures delete only the records not listed in
 * `batchItemFailures` (a handler that throws deletes none). What is not deleted comes back
 * after the visibility timeout, and after maxReceiveCount receives goes to the DLQ
 * (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html).
 */
export interface SqsPoller {
  /** One receive and one invocation; the number of messages received. */
  pollOnce(): Promise<number>;
  /** Polls until the queue holds nothing, visible or not (failed records wait out their timeout). */
  drain(o?: { timeoutMs?: number; before?: () => Promise<void> }): Promise<void>;
  /** Polls in the background, sleeping `pollIntervalMs` after an empty receive. */
  start(): void;
  stop(): Promise<void>;
  readonly stats: { batches: number; received: number; failed: number; deleted: number; thrown: number };
}

export type SqsHandler = (event: SQSEvent, context: Context) => Promise<SQSBatchResponse | void>;

export interface PollerOptions {
  sqs: SQSClient;
  queueUrl: string;
  queueArn: string;
  handler: SqsHandler;
  batchSize?: number;
  pollIntervalMs?: number;
  region?: string;
}

export function createSqsPoller(o: PollerOptions): SqsPoller {
  const stats = { batches: 0, received: 0, failed: 0, deleted: 0, thrown: 0 };
  let running: Promise<void> | null = null;
  let stopping = false;

  const pollOnce = async (): Promise<number> => {
    const out = await o.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: o.queueUrl, MaxNumberOfMessages: o.batchSize ?? 10, WaitTimeSeconds: 0, MessageSystemAttributeNames: ['All'] }),
    );
    const messages = out.Messages ?? [];
    if (messages.length === 0) return 0;
    const records: SQSRecord[] = messages.map((m) => ({
      messageId: m.MessageId as string,
      receiptHandle: m.ReceiptHandle as string,
      body: m.Body ?? '',
      attributes: {
        ApproximateReceiveCount: m.Attributes?.ApproximateReceiveCount ?? '1',
        SentTimestamp: m.Attributes?.SentTimestamp ?? String(Date.now()),
        SenderId: m.Attributes?.SenderId ?? 'AIDAFAUXQS',
        ApproximateFirstReceiveTimestamp: m.Attributes?.ApproximateFirstReceiveTimestamp ?? String(Date.now()),
      },
      messageAttributes: {},
      md5OfBody: m.MD5OfBody ?? '',
      eventSource: 'aws:sqs',
      eventSourceARN: o.queueArn,
      awsRegion: o.region ?? 'us-east-1',
    }));
    stats.batches++;
    stats.received += records.length;
    let failed: Set<string>;
    try {
      const response = await o.handler({ Records: records }, lambdaContext({ functionName: 's3-events' }));
      failed = new Set((response?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
    } catch {
      stats.thrown++;
      failed = new Set(records.map((r) => r.messageId));
    }
    stats.failed += failed.size;
    const done = records.filter((r) => !failed.has(r.messageId));
    if (done.length > 0) {
      await o.sqs.send(new DeleteMessageBatchCommand({ QueueUrl: o.queueUrl, Entries: done.map((r, i) => ({ Id: String(i), ReceiptHandle: r.receiptHandle })) }));
      stats.deleted += done.length;
    }
    return records.length;
  };

  const queued = async (): Promise<number> => {
    const out = await o.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: o.queueUrl, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible', 'ApproximateNumberOfMessagesDelayed'] }),
    );
    const a = out.Attributes ?? {};
    return Number(a.ApproximateNumberOfMessages ?? 0) + Number(a.ApproximateNumberOfMessagesNotVisible ?? 0) + Number(a.ApproximateNumberOfMessagesDelayed ?? 0);
  };

  return {
    pollOnce,
    async drain({ timeoutMs = 30_000, before } = {}) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        await before?.();
        if ((await pollOnce()) > 0) continue;
        if ((await queued()) === 0) return;
        if (Date.now() > until) throw new Error(`queue not drained within ${timeoutMs} ms (${await queued()} messages left)`);
        await sleep(o.pollIntervalMs ?? 50);
      }
    },
    start() {
      stopping = false;
      running ??= (async () => {
        while (!stopping) {
          const n = await pollOnce().catch(() => 0);
          if (n === 0 && !stopping) await sleep(o.pollIntervalMs ?? 50);
        }
      })();
    },
    async stop() {
      stopping = true;
      await running;
      running = null;
    },
    stats,
  };
}
