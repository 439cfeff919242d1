import type { Context } from 'aws-lambda';
import { migrate } from '../shared/db/migrate.ts';
import { isCustomResourceEvent, responseUrlOf, sendCustomResourceResponse, type CustomResourceResult } from './support/cloudformation.ts';
import { loadDatabaseConfig } from './support/config.ts';
import { prepareDatabase } from './support/database.ts';
import { plainLambdaHandler } from './support/instrument.ts';
import { logger } from './support/logger.ts';

/**
 * The migrate Lambda: applies the catalogue's migrations (shipped beside the bundle) at deploy
 * time. Invoked three ways, all answered:
 * - by a CDK trigger (aws-cdk-lib/triggers): a plain invoke without a payload; a throw fails the deploy;
 * - by CDK's Provider framework: a custom-resource event whose ResponseURL is `'...'`; the
 *   framework answers CloudFormation from what this returns or throws;
 * - by CloudFormation itself (a Custom:: resource whose ServiceToken is this function): the
 *   outcome is PUT to the event's ResponseURL, FAILED with the reason when the migrations fail.
 * Create and Update apply what is pending (idempotent: a second run applies nothing); Delete
 * does nothing — removing the stack never drops the catalogue.
 */

/** The custom resource's physical id: one schema per database, kept across updates (no replacement). */
export const SCHEMA_RESOURCE_ID = 'filestore-catalogue-schema';

/** Time kept to report before the function's own timeout would leave CloudFormation waiting an hour. */
const REPORT_MARGIN_MS = 3_000;

async function applyMigrations(): Promise<CustomResourceResult> {
  const config = loadDatabaseConfig();
  prepareDatabase(config);
  const applied = await migrate(config.databaseUrl, (line) => logger.info(line));
  logger.info('migrations applied', { applied });
  return { physicalResourceId: SCHEMA_RESOURCE_ID, data: { Applied: String(applied.length) } };
}

export const handler = plainLambdaHandler('migrate', async (event: unknown, context: Context) => {
  if (!isCustomResourceEvent(event)) return answer(await applyMigrations());
  const work = event.RequestType === 'Delete' ? Promise.resolve({ physicalResourceId: event.PhysicalResourceId }) : applyMigrations();
  const url = responseUrlOf(event);
  if (!url) return answer(await work);
  try {
    const result = await beforeTimeout(work, context);
    await sendCustomResourceResponse(url, event, { status: 'SUCCESS', result });
    return answer(result);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    logger.error('migrations failed', { reason });
    // Answered: throwing now would only make Lambda retry an asynchronous invoke.
    await sendCustomResourceResponse(url, event, { status: 'FAILED', reason: `migrations failed: ${reason}` });
    return { Status: 'FAILED', Reason: reason };
  }
});

/** The shape CDK's Provider framework reads. */
function answer(r: CustomResourceResult): { PhysicalResourceId: string; Data: Record<string, string> } {
  return { PhysicalResourceId: r.physicalResourceId, Data: r.data ?? {} };
}

function beforeTimeout<T>(work: Promise<T>, context: Context): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error('still running when the function was about to time out; raise its timeout and deploy again (applied migrations stay applied)')),
      Math.max(0, context.getRemainingTimeInMillis() - REPORT_MARGIN_MS),
    );
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
