import { loadConfig } from '../shared/index-config.ts';
import { FilestoreError } from '../shared/index.ts';
import { DATABASE_CHOICE, prepareDatabase } from '../shared/db/index.ts';
import { migrate } from '../shared/db/index-migrate.ts';
import { stopOnSignals } from '../shared/process/index.ts';
import { BullMqReconcileQueue } from '../shared/queues/index-bullmq.ts';
import { startAuditScheduler, type AuditScheduler, createReconciler } from '../shared/reconcile/index.ts';
import { startServices, wireFilestore, type Filestore, type FilestoreOptions } from '../shared/index-runtime.ts';
import { describeAttempt } from './attempt-line.ts';

/**
 * The reconcile worker's main (`filestore reconcile-worker`, npm run filestore:reconcile):
 * consumes `filestore-reconcile` from Redis with FILESTORE_RECONCILE_CONCURRENCY jobs at once
 * and, with FILESTORE_AUDIT_CRON, schedules audits of all active mounts. SIGTERM/SIGINT let
 * running jobs finish, then exit 0; a second signal exits at once with 1 (the interrupted jobs
 * run again elsewhere).
 */
export async function runReconcileWorker(): Promise<void> {
  const config = loadConfig();
  if (config.REDIS_URL === 'inline') {
    throw new FilestoreError('CONFIG_ERROR', 'the reconcile worker consumes the Redis queue: set REDIS_URL=redis://… (inline mode runs reconciliation inside `filestore start`)');
  }
  const database = config.database;
  if (!database) throw new FilestoreError('CONFIG_ERROR', `the reconcile worker needs the catalogue it reconciles: set ${DATABASE_CHOICE}`);
  prepareDatabase(database);
  const log = (line: string) => console.error(line);

  let core: Filestore | undefined;
  let queue: BullMqReconcileQueue | undefined;
  let audits: AuditScheduler | undefined;
  // Running jobs finish; a second signal exits at once (the interrupted jobs run again elsewhere).
  stopOnSignals(
    async () => {
      await audits?.close().catch((e: Error) => log(`audit scheduler: ${e.message}`));
      await queue?.close().catch((e: Error) => log(`reconcile queue: ${e.message}`));
      await core?.close().catch(() => {});
    },
    log,
    'reconcile worker',
    { repeatWindowMs: 0, finishing: 'finishing running jobs', forcing: 'exiting without waiting', sayStopped: false },
  );

  const options: FilestoreOptions = {
    databaseUrl: database.databaseUrl,
    redisUrl: config.REDIS_URL,
    poolSize: config.FILESTORE_DB_POOL_SIZE,
    s3: { endpoint: config.FILESTORE_S3_ENDPOINT },
    queuePrefix: config.FILESTORE_QUEUE_PREFIX,
    outboxRetentionMs: config.FILESTORE_OUTBOX_RETENTION,
    log,
  };
  await migrate(options.databaseUrl, log);
  // The core, then the long-running part (maintenance timer, relay loop); its own queue
  // below consumes (the core's reconcile queue only sends follow-up jobs).
  core = await startServices(await wireFilestore(options), options);
  // The catalogue's prefix (core.queuePrefix): the queue the API and agents of this catalogue send to.
  queue = new BullMqReconcileQueue(config.REDIS_URL, {
    pool: core.pool,
    metrics: core.metrics,
    prefix: core.queuePrefix,
    log,
    onAttempt: (r) => console.log(describeAttempt(r)),
  });
  const handler = createReconciler(core, { maxMissingRatio: config.FILESTORE_MAX_MISSING_RATIO, s3MissingGraceMs: config.FILESTORE_S3_MISSING_GRACE_MS });
  await queue.start(handler, { concurrency: config.FILESTORE_RECONCILE_CONCURRENCY });
  if (config.FILESTORE_AUDIT_CRON) {
    audits = await startAuditScheduler({ pool: core.pool, queue, cron: config.FILESTORE_AUDIT_CRON, redisUrl: config.REDIS_URL, metrics: core.metrics, log });
  }
  log(
    `reconcile worker: consuming ${queue.name} on ${new URL(config.REDIS_URL).host} (prefix ${core.queuePrefix}) with concurrency ${config.FILESTORE_RECONCILE_CONCURRENCY}; ` +
      (config.FILESTORE_AUDIT_CRON ? `audits of all active mounts at "${config.FILESTORE_AUDIT_CRON}"` : 'no audits scheduled (FILESTORE_AUDIT_CRON unset)'),
  );
}
