import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Tracer } from '@aws-lambda-powertools/tracer';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { lambdaCore, type LambdaCore } from './core.ts';
import { logger } from './logger.ts';

export { logger };

/** X-Ray tracing of the container (off outside Lambda, and with POWERTOOLS_TRACE_ENABLED=false). */
export const tracer = new Tracer({ serviceName: process.env.POWERTOOLS_SERVICE_NAME || 'filestore' });

/**
 * A Lambda handler around `fn`: middy with Powertools Logger (the Lambda context and a
 * correlation id on every line), Tracer (a segment per invocation), and the core of the
 * container (lambdaCore). After `fn`, failed or not, two things leave before the handler
 * returns, because the container may be frozen next and nothing of it runs until it thaws:
 * the outbox rows committed so far (core.flushOutbox(); a failure there is logged, and the
 * maintenance Lambda publishes what stays owed), then the metrics as EMF (EmfMetrics).
 */
export function lambdaHandler<E, R>(name: string, fn: (event: E, context: Context, lc: LambdaCore) => Promise<R>): (event: E, context: Context) => Promise<R> {
  return plainLambdaHandler(name, async (event: E, context: Context) => {
    const lc = await lambdaCore();
    try {
      return await fn(event, context, lc);
    } finally {
      await lc.core.flushOutbox().catch((err: Error) => logger.warn('outbox not published before returning; maintenance publishes it', { error: err.message }));
      lc.metrics.publishStoredMetrics();
    }
  });
}

/**
 * lambdaHandler without the core: for handlers that must not need one — the migrate Lambda
 * (the core reads the catalogue, which may not exist yet) and the authorizer (no database).
 */
export function plainLambdaHandler<E, R>(name: string, fn: (event: E, context: Context) => Promise<R>): (event: E, context: Context) => Promise<R> {
  logger.appendPersistentKeys({ handler: name });
  const base = async (event: E, context: Context): Promise<R> => {
    logger.setCorrelationId(correlationIdOf(event) ?? context.awsRequestId);
    return fn(event, context);
  };
  const wrapped = middy<E, R, Error, Context>(base).use(injectLambdaContext(logger, { resetKeys: true })).use(captureLambdaHandler(tracer));
  return (event, context) => wrapped(event, context);
}

/**
 * The id that ties this invocation's lines to its cause: the HTTP API's request id, the
 * CloudFormation request, the EventBridge event, the first SQS message (of a batch).
 */
export function correlationIdOf(event: unknown): string | undefined {
  if (typeof event !== 'object' || event === null) return undefined;
  const e = event as {
    requestContext?: { requestId?: unknown };
    RequestId?: unknown;
    id?: unknown;
    'detail-type'?: unknown;
    Records?: { messageId?: unknown }[];
  };
  const candidates = [e.requestContext?.requestId, e.RequestId, e['detail-type'] !== undefined ? e.id : undefined, Array.isArray(e.Records) ? e.Records[0]?.messageId : undefined];
  return candidates.find((c): c is string => typeof c === 'string' && c.length > 0);
}
