import type { Context } from 'aws-lambda';
import { DISPATCHING_FUNCTIONS, lambdaCore, type LambdaCore } from './core.ts';
import { plainLambdaHandler } from './instrument.ts';
import { logger } from './logger.ts';

export { logger };
export { correlationIdOf, plainLambdaHandler, tracer } from './instrument.ts';

/**
 * A Lambda handler around `fn`: middy with Powertools Logger (the Lambda context and a
 * correlation id on every line), Tracer (a segment per invocation), and the core of the
 * container (lambdaCore). After `fn`, failed or not, two things leave before the handler
 * returns, because the container may be frozen next and nothing of it runs until it thaws:
 * the outbox rows this container wrote since its last flush (relay.flushWritten(): nothing to
 * do, no round trip, when it wrote none; rows of other containers are the maintenance
 * Lambda's; a failure is logged, and the maintenance Lambda publishes what stays owed; the
 * events are on the bus when it returns, their rows' mark as published is sent and committed
 * without the handler waiting for it: see OutboxRelay.publishOnce), then
 * the metrics as EMF (EmfMetrics).
 */
export function lambdaHandler<E, R>(name: string, fn: (event: E, context: Context, lc: LambdaCore) => Promise<R>): (event: E, context: Context) => Promise<R> {
  return plainLambdaHandler(name, async (event: E, context: Context) => {
    const lc = await lambdaCore({ dispatches: DISPATCHING_FUNCTIONS.has(name) });
    try {
      return await fn(event, context, lc);
    } finally {
      await flushWritten(lc).catch((err: Error) => logger.warn('outbox not published before returning; maintenance publishes it', { error: err.message }));
      lc.metrics.publishStoredMetrics();
    }
  });
}

/** The container's own outbox rows (core.flushOutbox() when the core has no relay to ask). */
async function flushWritten(lc: LambdaCore): Promise<number> {
  return lc.core.relay ? lc.core.relay.flushWritten() : lc.core.flushOutbox();
}
