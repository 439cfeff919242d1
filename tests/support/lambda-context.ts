import { randomUUID } from 'node:crypto';
import type { Context } from 'aws-lambda';

/**
 * A Lambda Context as the runtime hands one to a handler: ids, names, limits and a clock for
 * getRemainingTimeInMillis (counting down from `remainingMs`, default 30 s). The deprecated
 * done/fail/succeed callbacks throw: a handler of ours returns a promise.
 */
export function lambdaContext(o: { remainingMs?: number; functionName?: string } = {}): Context {
  const functionName = o.functionName ?? 'filestore-test';
  const deadline = Date.now() + (o.remainingMs ?? 30_000);
  const unsupported = () => {
    throw new Error('callback-style completion is not used by Filestore handlers');
  };
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:eu-west-1:123456789012:function:${functionName}`,
    memoryLimitInMB: '512',
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: `2026/01/01/[$LATEST]${randomUUID().replace(/-/g, '')}`,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: unsupported,
    fail: unsupported,
    succeed: unsupported,
  };
}
