import { setTimeout as sleep } from 'node:timers/promises';
import type { Context } from 'aws-lambda';
import pg from 'pg';
import { registerConfiguredS3Mounts, type ConfiguredMountsReport, type ConfiguredS3Mount } from '../shared/catalogue/index.ts';
import { connectionConfig, createPool } from '../shared/db/index.ts';
import { migrate } from '../shared/db/index-migrate.ts';
import { isCustomResourceEvent, responseUrlOf, sendCustomResourceResponse, type CustomResourceResult } from './support/cloudformation.ts';
import { loadMigrateConfig } from './support/config.ts';
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
 * Create and Update apply what is pending (idempotent: a second run applies nothing), then
 * register the stack's S3 mounts (FILESTORE_S3_MOUNTS; registerConfiguredS3Mounts: missing ones
 * created, others left alone, a key on other storage fails the deploy); Delete does nothing —
 * removing the stack never drops the catalogue nor a mount.
 */

/** The custom resource's physical id: one schema per database, kept across updates (no replacement). */
export const SCHEMA_RESOURCE_ID = 'filestore-catalogue-schema';

/** Time kept to report before the function's own timeout would leave CloudFormation waiting an hour. */
const REPORT_MARGIN_MS = 3_000;

/**
 * The first connection is retried (a small loop; no retry library is a dependency): on a first
 * deploy the trigger runs as soon as the proxy's target group exists, while the new target may
 * still be unavailable for minutes, the master secret's first rotation may be changing the
 * password and the role's rds-db:connect may not have propagated yet. Only errors that such a
 * wait can cure are retried (connection refused/reset/timed out, name not resolved, auth
 * refused, the server starting or out of connections); the delay doubles from 1 s up to 20 s,
 * and the loop stops while RETRY_RESERVE_MS of the invocation remain, so the migrations keep
 * their time and a database that never comes up fails the deploy with its last error.
 */
export const RETRY_RESERVE_MS = 60_000;
const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', '28P01', '28000', '57P03', '53300']);

function isTransient(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && TRANSIENT_CODES.has(code)) return true;
  // pg's "Connection terminated unexpectedly" (the proxy closing a socket it cannot serve yet) has no code.
  return err instanceof Error && /Connection terminated|timeout expired/i.test(err.message);
}

/** One connection made and closed, retried while isTransient and time allows (see RETRY_RESERVE_MS). */
export async function awaitDatabase(databaseUrl: string, remainingMs: () => number): Promise<void> {
  for (let attempt = 1, delay = 1_000; ; attempt++, delay = Math.min(delay * 2, 20_000)) {
    const client = new pg.Client({ ...connectionConfig(databaseUrl), connectionTimeoutMillis: 10_000, application_name: 'filestore-migrate' });
    try {
      await client.connect();
      await client.end();
      if (attempt > 1) logger.info('database reachable', { attempt });
      return;
    } catch (err) {
      await client.end().catch(() => {});
      const budget = remainingMs() - RETRY_RESERVE_MS;
      if (!isTransient(err) || budget < delay) {
        if (attempt > 1 && err instanceof Error) err.message = `${err.message} (database not reachable after ${attempt} attempts)`;
        throw err;
      }
      logger.warn('database not reachable yet, retrying', { attempt, delayMs: delay, error: err instanceof Error ? err.message : String(err) });
      await sleep(delay);
    }
  }
}

async function applyMigrations(remainingMs: () => number): Promise<CustomResourceResult> {
  const config = loadMigrateConfig();
  prepareDatabase(config);
  await awaitDatabase(config.databaseUrl, remainingMs);
  const applied = await migrate(config.databaseUrl, (line) => logger.info(line));
  logger.info('migrations applied', { applied });
  const data: Record<string, string> = { Applied: String(applied.length) };
  if (config.s3Mounts) {
    const report = await registerMounts(config.databaseUrl, config.s3Mounts);
    Object.assign(data, { Created: String(report.created.length), Unchanged: String(report.unchanged.length) });
  }
  return { physicalResourceId: SCHEMA_RESOURCE_ID, data };
}

/** Errors of the registration step, told apart from the migrations' in the FAILED reason. */
const registrationFailures = new WeakSet<object>();

/** FILESTORE_S3_MOUNTS into the catalogue (registerConfiguredS3Mounts), on a connection of its own. */
async function registerMounts(databaseUrl: string, mounts: ConfiguredS3Mount[]): Promise<ConfiguredMountsReport> {
  const pool = createPool(databaseUrl, 1);
  try {
    const client = await pool.connect();
    try {
      const report = await registerConfiguredS3Mounts(client, mounts);
      logger.info('S3 mounts registered', { created: report.created, unchanged: report.unchanged });
      if (report.unlisted.length > 0) {
        logger.info('S3 mounts of the catalogue not in FILESTORE_S3_MOUNTS, left as they are', { unlisted: report.unlisted });
      }
      return report;
    } finally {
      client.release();
    }
  } catch (err) {
    if (typeof err === 'object' && err !== null) registrationFailures.add(err);
    throw err;
  } finally {
    await pool.end();
  }
}

export const handler = plainLambdaHandler('migrate', async (event: unknown, context: Context) => {
  const remainingMs = () => context.getRemainingTimeInMillis();
  if (!isCustomResourceEvent(event)) return answer(await applyMigrations(remainingMs));
  const work = event.RequestType === 'Delete' ? Promise.resolve({ physicalResourceId: event.PhysicalResourceId }) : applyMigrations(remainingMs);
  const url = responseUrlOf(event);
  if (!url) return answer(await work);
  try {
    const result = await beforeTimeout(work, context);
    await sendCustomResourceResponse(url, event, { status: 'SUCCESS', result });
    return answer(result);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    const step = registrationFailures.has(err as object) ? 'S3 mounts not registered (the migrations are applied)' : 'migrations failed';
    logger.error(step, { reason });
    // Answered: throwing now would only make Lambda retry an asynchronous invoke.
    await sendCustomResourceResponse(url, event, { status: 'FAILED', reason: `${step}: ${reason}` });
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
