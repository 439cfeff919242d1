import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import type { Tracer } from '@aws-lambda-powertools/tracer';
import middy from '@middy/core';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import type { Context } from 'aws-lambda';
import { logger } from './logger.ts';

/**
 * The instrumentation every handler gets, without the core: handlers that need none (the
 * migrate Lambda, the authorizer) import this module and not powertools.ts, so their bundles
 * carry no core (smaller, faster to load).
 */

/**
 * X-Ray tracing of the container, present exactly when Powertools Tracer would enable itself
 * (tracingWanted). When it would not, the Tracer is not even loaded: its X-Ray SDK installs an
 * async hook at import (cls-hooked) that makes every promise of the process several times
 * dearer, tracing on or off — the bulk of the S3-event handler's overhead outside Lambda.
 */
export const tracer: Tracer | undefined = tracingWanted(process.env) ? await loadTracer() : undefined;

async function loadTracer(): Promise<Tracer> {
  const { Tracer } = await import('@aws-lambda-powertools/tracer');
  return new Tracer({ serviceName: process.env.POWERTOOLS_SERVICE_NAME || 'filestore' });
}

/** Powertools Tracer's own rule: in Lambda (AWS_EXECUTION_ENV), not the Amplify mock nor SAM local, and POWERTOOLS_TRACE_ENABLED not `false`. */
export function tracingWanted(env: NodeJS.ProcessEnv): boolean {
  if ((env.POWERTOOLS_TRACE_ENABLED ?? '').toLowerCase() === 'false') return false;
  const executionEnv = env.AWS_EXECUTION_ENV ?? '';
  return executionEnv !== '' && executionEnv !== 'AWS_Lambda_amplify-mock' && (env.AWS_SAM_LOCAL ?? '') === '';
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
  const wrapped = middy<E, R, Error, Context>(base).use(injectLambdaContext(logger, { resetKeys: true }));
  if (tracer) wrapped.use(captureLambdaHandler(tracer));
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
