import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Tracer } from '@aws-lambda-powertools/tracer';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { logger } from './logger.ts';

/**
 * The instrumentation every handler gets, without the core: handlers that need none (the
 * migrate Lambda, the authorizer) import this module and not powertools.ts, so their bundles
 * carry no core (smaller, faster to load).
 */

/** X-Ray tracing of the container (off outside Lambda, and with POWERTOOLS_TRACE_ENABLED=false). */
export const tracer = new Tracer({ serviceName: process.env.POWERTOOLS_SERVICE_NAME || 'filestore' });

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
