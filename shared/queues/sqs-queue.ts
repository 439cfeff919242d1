import { GetQueueAttributesCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { JobTransport } from '../catalogue/job-transport.ts';
import { clearQueueOwed, enqueueJob, markQueueOwed, type ReconcileJobRow } from '../catalogue/jobs.ts';
import { findMount } from '../catalogue/mounts.ts';
import type { Mount } from '../catalogue/types.ts';
import type { Pool } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';
import { lockKey } from '../catalogue/locks.ts';
import { defaultMetrics } from '../metrics/prom.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';
import type { ReconcileHandler, ReconcileRequest } from '../reconcile/types.ts';
import { ReconcileWorker } from '../reconcile/worker.ts';
import { toNewJob, type Enqueued, type ReconcileQueue, type ReconcileQueueOptions, type StartOptions } from '../reconcile/queue.ts';

/** The body of a reconcile message on SQS: the row id is what counts (the row holds the merged options); the rest is for people reading the queue or the DLQ. */
export interface SqsReconcileMessage {
  rowId: number;
  mountId: string;
  path: string;
  reason: ReconcileJobRow['reason'];
}

export interface SqsQueueSetup {
  /** FILESTORE_RECONCILE_QUEUE_URL: the standard SQS queue the reconcile Lambda consumes (with a DLQ). */
  queueUrl: string;
  /** A client of its own (tests: fauxqs' endpoint and credentials); default: the SDK's region and credentials. */
  client?: SQSClient | undefined;
}

/** How long an open job of an S3 mount sits still before a sweep sends it again (longer than a Lambda runs). */
const SWEEP_IDLE_MS = 20 * 60_000;
const SWEEP_PAGE = 500;
/** SQS caps a message's delay at 15 minutes. */
const MAX_DELAY_SECONDS = 900;

/**
 * Reconcile jobs of S3 mounts in AWS, where no long-running worker runs them: the row is
 * recorded as every queue records it (joining a waiting row for the same path; a new row with
 * transport `sqs`, which BullMQ consumers leave alone), then a message
 * naming it goes to the SQS queue that the reconcile Lambda consumes (lambdas/reconcile.ts,
 * shared/queues/sqs-consumer.ts). Retries are SQS's: a failed attempt is reported as a batch
 * item failure and comes back after its visibility timeout (set to the queue's backoff); after
 * the redrive policy's maxReceiveCount deliveries the message goes to the DLQ. The row counts
 * the attempts; its last allowed attempt fails it.
 *
 * Producer only: `start` refuses (the consumer is the Lambda's event source mapping).
 * A message that could not be sent leaves the row marked owed (`queuePending`); `sweep` (the
 * audit Lambda calls it each invocation) sends those, and those of rows left without one.
 */
export class SqsReconcileQueue implements ReconcileQueue {
  readonly name: string;
  readonly prefix = undefined;
  readonly client: SQSClient;
  private readonly ownClient: boolean;
  private readonly metrics: FilestoreMetrics;
  private readonly worker: ReconcileWorker;

  constructor(
    private readonly o: ReconcileQueueOptions & { pool: Pool },
    readonly setup: SqsQueueSetup,
  ) {
    this.name = o.name ?? queueNameOf(setup.queueUrl);
    this.ownClient = setup.client === undefined;
    this.client = setup.client ?? new SQSClient({});
    this.metrics = o.metrics ?? defaultMetrics();
    // Only to count coalesced requests as every queue does; nothing runs here.
    this.worker = new ReconcileWorker({ pool: o.pool, metrics: this.metrics, handler: refuse });
  }

  /** Every mount's jobs go to SQS (jobTransportOf). */
  async transportOf(_mountId: string): Promise<JobTransport> {
    return 'sqs';
  }

  get queueUrl(): string {
    return this.setup.queueUrl;
  }

  async enqueue(request: ReconcileRequest): Promise<Enqueued> {
    const r = await enqueueJob(this.o.pool, toNewJob(request), { transport: 'sqs' });
    if (r.coalesced) {
      await this.worker.countCoalesced(r.job);
      return r;
    }
    try {
      await this.send(r.job);
    } catch (err) {
      this.o.log?.(`reconcile queue ${this.name}: job ${r.job.id} recorded, its message not sent (${(err as Error).message}); the next audit invocation sends it`);
      await markQueueOwed(this.o.pool, r.job.id).catch(() => {});
      return { ...r, queuePending: true };
    }
    return r;
  }

  /** Sends the message of an open row (again: a row stopped at a checkpoint, an owed one), after `delaySeconds`. */
  async send(row: Pick<ReconcileJobRow, 'id' | 'mountId' | 'path' | 'reason'>, delaySeconds = 0): Promise<void> {
    const body: SqsReconcileMessage = { rowId: row.id, mountId: row.mountId, path: row.path, reason: row.reason };
    await this.sendBody(JSON.stringify(body), delaySeconds);
  }

  /** Sends a message body as it is (one received, sent on to a later invocation). */
  async sendBody(body: string, delaySeconds = 0): Promise<void> {
    await this.client.send(new SendMessageCommand({ QueueUrl: this.setup.queueUrl, MessageBody: body, DelaySeconds: Math.min(MAX_DELAY_SECONDS, Math.max(0, Math.ceil(delaySeconds))) }));
  }

  /**
   * Sends a message for each open job of transport `sqs` that may have none: marked owed (its send
   * failed), or not moved for `idleMs` (a send lost between the insert and SQS, a message gone
   * to the DLQ while the row stayed open, a container killed mid-run after its last delivery).
   * A row whose run lock is held (reconcile/job-run-lock.ts: a run of it is under way) gets none:
   * that run's end settles it or sends its continuation, and a message for it now would only be
   * put off again and again while it runs, one more chain of look-agains per sweep. Another row
   * with a message already gets a second one: harmless, a delivery of a row running elsewhere is
   * put off and one of a settled row is dropped. Full audits are left out: the
   * audit Lambda resumes them on its schedule. Rows of BullMQ (transport `redis`) are its
   * consumers', whatever their mount. `mountIds` (the queue's option) limits the look to those
   * mounts; undefined means all. Returns how many were sent.
   */
  async sweep(idleMs = SWEEP_IDLE_MS): Promise<number> {
    let sent = 0;
    let after = 0;
    for (;;) {
      // The mount filter is in the statement text or not at all (see db/pool.ts).
      const params: unknown[] = [after, idleMs, SWEEP_PAGE];
      if (this.o.mountIds) params.push([...this.o.mountIds]);
      const { rows } = await this.o.pool.query<Pick<ReconcileJobRow, 'id' | 'mountId' | 'path' | 'reason'>>(
        `SELECT j.id, j.mount_id AS "mountId", j.path, j.reason FROM filestore.reconciliation_jobs j
          WHERE j.transport = 'sqs' AND j.status IN ('queued', 'running') AND j.id > $1
            AND (j.queue_owed OR j.updated_at <= now() - make_interval(secs => $2::float8 / 1000))
            AND NOT (j.path = '' AND coalesce((j.options->>'recursive')::boolean, false))
            ${this.o.mountIds ? 'AND j.mount_id = ANY ($4::uuid[])' : ''}
          ORDER BY j.id LIMIT $3`,
        params,
      );
      const running = await this.runsUnderWay(rows.map((r) => r.id));
      const due = rows.filter((r) => !running.has(r.id));
      for (const row of due) await this.send(row);
      await clearQueueOwed(this.o.pool, due.map((r) => r.id));
      sent += due.length;
      if (rows.length < SWEEP_PAGE) return sent;
      after = (rows[rows.length - 1] as ReconcileJobRow).id;
    }
  }

  /** Of rows `ids`, those whose run lock (lockKey('reconcile-job', id), as tryLockJobRun takes it) some session holds. */
  private async runsUnderWay(ids: readonly number[]): Promise<Set<number>> {
    if (ids.length === 0) return new Set();
    // pg_locks shows a bigint advisory key as its high half (classid) and low half (objid), objsubid 1.
    const keys = ids.map((id) => lockKey('reconcile-job', String(id)).toString());
    const { rows } = await this.o.pool.query<{ i: number }>(
      `SELECT k.i::int AS i FROM unnest($1::bigint[]) WITH ORDINALITY AS k(key, i)
        WHERE EXISTS (SELECT 1 FROM pg_locks l
                       WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                         AND l.classid = ((k.key >> 32) & 4294967295)::oid AND l.objid = (k.key & 4294967295)::oid)`,
      [keys],
    );
    return new Set(rows.map((r) => ids[r.i - 1] as number));
  }

  async start(_handler: ReconcileHandler, _options?: StartOptions): Promise<void> {
    throw new FilestoreError('CONFIG_ERROR', `reconcile queue ${this.name} is SQS: its consumer is the reconcile Lambda (lambdas/reconcile.ts), not this process`);
  }

  /** Messages waiting (visible or delayed); those in flight are running. */
  async backlog(): Promise<number> {
    const out = await this.client.send(
      new GetQueueAttributesCommand({ QueueUrl: this.setup.queueUrl, AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesDelayed'] }),
    );
    const a = out.Attributes ?? {};
    return Number(a.ApproximateNumberOfMessages ?? 0) + Number(a.ApproximateNumberOfMessagesDelayed ?? 0);
  }

  async close(): Promise<void> {
    if (this.ownClient) this.client.destroy();
  }
}

/**
 * The queue of a core that has an SQS reconcile queue beside its own (BullMQ or inline): S3
 * mounts' jobs go to SQS (the reconcile Lambda), local mounts' to `local` (their agent's queue,
 * as without SQS). Consuming (`start`) and the backlog are the local queue's: a process consumes
 * only its agents' jobs.
 */
export class RoutedReconcileQueue implements ReconcileQueue {
  readonly name: string;
  readonly prefix: string | undefined;
  /** A mount's kind never changes. */
  private readonly kinds = new Map<string, Mount['kind']>();

  constructor(
    private readonly pool: Pool,
    readonly sqs: SqsReconcileQueue,
    readonly local: ReconcileQueue,
  ) {
    this.name = local.name;
    this.prefix = local.prefix;
  }

  async enqueue(request: ReconcileRequest): Promise<Enqueued> {
    return (await this.queueOf(request.mountId)).enqueue(request);
  }

  private async queueOf(mountId: string): Promise<ReconcileQueue> {
    let kind = this.kinds.get(mountId);
    if (kind === undefined) {
      kind = (await findMount(this.pool, mountId))?.kind;
      // Unknown mount: the local queue's enqueue answers MOUNT_NOT_FOUND.
      if (kind === undefined) return this.local;
      if (this.kinds.size > 10_000) this.kinds.clear();
      this.kinds.set(mountId, kind);
    }
    return kind === 's3' ? this.sqs : this.local;
  }

  /** What carries the jobs of `mountId` here: `sqs` for an S3 mount, the local queue's otherwise. */
  async transportOf(mountId: string): Promise<JobTransport> {
    return (await this.queueOf(mountId)) === this.sqs ? 'sqs' : 'redis';
  }

  start(handler: ReconcileHandler, options?: StartOptions): Promise<void> {
    return this.local.start(handler, options);
  }

  backlog(): Promise<number> {
    return this.local.backlog();
  }

  backlogs(): Promise<Map<string, number>> {
    return this.local.backlogs ? this.local.backlogs() : this.local.backlog().then((n) => new Map([[this.local.name, n]]));
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.local.close(), this.sqs.close()]);
  }
}

const refuse: ReconcileHandler = async () => {
  throw new Error('the SQS reconcile queue runs nothing in this process');
};

/** The queue's name, the last segment of its URL (https://sqs.<region>.amazonaws.com/<account>/<name>). */
function queueNameOf(url: string): string {
  try {
    return new URL(url).pathname.split('/').filter(Boolean).pop() ?? url;
  } catch {
    throw new FilestoreError('CONFIG_ERROR', `FILESTORE_RECONCILE_QUEUE_URL is not a URL: ${JSON.stringify(url)}`);
  }
}
