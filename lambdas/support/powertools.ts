import type { Context } from 'aws-lambda';
import { lambdaCore, type LambdaCore } from './core.ts';
import { plainLambdaHandler } from './instrument.ts';
import { logger } from './logger.ts';

export { logger };
export { correlationIdOf, plainLambdaHandler, tracer } from './instrument.ts';

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
