import { setTimeout as sleep } from 'node:timers/promises';
import { BatchProcessor, EventType, processPartialResponse } from '@aws-lambda-powertools/batch';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import { ASYNC_COMMIT_SQL, touchCheckedSql } from '../../catalogue/drift-writes.ts';
import type { Mount } from '../../catalogue/types.ts';
import { poolMax } from '../../db/pool.ts';
import { FilestoreError } from '../../errors.ts';
import { ancestorsOf } from '../../paths.ts';
import { detectDrift, type DriftCore } from '../drift.ts';
import type { JobTarget } from '../job-plan.ts';
import { reconcilePath } from '../reconcile-path.ts';
import type { ReconcileCore } from '../reconciler.ts';
import { forEachLimited } from '../strategies/base.ts';
import { BatchApply } from './apply.ts';
import type { KeySkip } from './keys.ts';
import { dropApplied, dropStored, mountsAndSequencers, newestPerKey, type KeyChange, type PrefetchedSequencers } from './newest.ts';
import { parseNotification, type S3Notification } from './schema.ts';

export type S3EventCore = DriftCore & ReconcileCore;

export interface S3EventOptions {
  /** FILESTORE_S3_MISSING_GRACE_MS: a deleted key is looked at again after it before it is MISSING. */
  s3MissingGraceMs?: number | undefined;
  /**
   * Pauses before keys that could not be settled yet are tried again in this invocation: held
   * by a command right now (the event of Filestore's own write often arrives before its
   * commit), or their reconciliation ran elsewhere. After the last, their records fail and SQS
   * redelivers them after the visibility timeout. Default [100, 400, 1000].
   */
  retryDelaysMs?: readonly number[] | undefined;
  /**
   * Reconciliations at once. Each holds one connection for its run lock and needs another for
   * its queries: default the pool's size minus one (1 with a Lambda's pool of 2).
   */
  concurrency?: number | undefined;
  log?: S3EventLog | undefined;
}

export interface S3EventLog {
  info(message: string, data: Record<string, unknown>): void;
  warn(message: string, data: Record<string, unknown>): void;
}

/** What happened to the keys of one invocation (also logged). */
export interface S3EventSummary {
  records: number;
  testEvents: number;
  skipped: Record<KeySkip, number>;
  /** Keys whose newest event the catalogue had already applied (no HEAD). */
  dropped: number;
  /** Keys whose newest event reports the size and ETag their live file records (Filestore's own write; no HEAD). */
  recorded: number;
  /** Keys looked at (HEAD) and judged. */
  judged: number;
  /** Keys reconciled (drift: changed, created, deleted outside Filestore). */
  reconciled: number;
}

const DEFAULT_RETRY_DELAYS = [100, 400, 1000];

/**
 * The S3-event handler's work for one SQS batch (SPEC §10): parse each message (direct S3 or
 * EventBridge shape, s3:TestEvent acknowledged), locate each key in the S3 mounts, keep the
 * newest event per key, drop those the catalogue already applied, store the sequencers of those
 * whose event reports the version the catalogue holds (no HEAD), then judge the rest against
 * storage together (detectDrift: HEAD, Filestore's own writes and duplicates change nothing
 * but the stored sequencer) and reconcile each drifted key inline (reason `s3_event`, a job
 * row per key): the plain ones (a file created or changed) from what the HEAD found, in
 * the judgement's own transaction (apply.ts), the others one by one (reconcilePath). Records are handled by Powertools' BatchProcessor, in parallel: a record whose
 * body or keys failed is reported in `batchItemFailures` (SQS ReportBatchItemFailures: only
 * those come back); when every record failed, the invocation throws and the batch returns.
 * The keys of one batch are each judged and reconciled once, so a key is never worked on
 * twice at once within a batch; across batches, the path locks and run locks serialise.
 */
export async function processS3Events(core: S3EventCore, event: SQSEvent, context: Context | undefined, o: S3EventOptions = {}): Promise<SQSBatchResponse> {
  // A reconciliation holds one connection for its run lock and queries on another: with a
  // single connection it would wait for itself until the Lambda times out.
  if (poolMax(core.pool) < 2) throw new FilestoreError('CONFIG_ERROR', 'the S3-event handler reconciles keys inline and needs a pool of at least 2 connections: set FILESTORE_DB_POOL_SIZE=2');
  const batch = new S3EventBatch(core, event.Records, o);
  const processor = new BatchProcessor(EventType.SQS);
  const response = await processPartialResponse(event, (record: SQSRecord) => batch.settle(record), processor, context ? { context } : undefined);
  o.log?.info('S3 event batch processed', { ...batch.summary, failed: response.batchItemFailures.length });
  return response;
}

class S3EventBatch {
  readonly summary: S3EventSummary;
  private readonly parsed = new Map<string, S3Notification | Error>();
  private work: Promise<Map<string, KeyWork>> | undefined;

  constructor(
    private readonly core: S3EventCore,
    records: SQSRecord[],
    private readonly o: S3EventOptions,
  ) {
    this.summary = { records: records.length, testEvents: 0, skipped: { outside_mounts: 0, staging: 0, not_a_path: 0 }, dropped: 0, recorded: 0, judged: 0, reconciled: 0 };
    for (const r of records) {
      try {
        const n = parseNotification(r.body);
        if (n.kind === 'test') this.summary.testEvents++;
        this.parsed.set(r.messageId, n);
      } catch (err) {
        this.parsed.set(r.messageId, err as Error);
      }
    }
  }

  /** One record: resolves when every key it names is settled, throws when one could not be. */
  async settle(record: SQSRecord): Promise<void> {
    const n = this.parsed.get(record.messageId);
    if (n instanceof Error) throw n;
    if (n === undefined || n.kind === 'test') return;
    this.work ??= this.run();
    const work = await this.work;
    for (const c of n.changes) {
      const failure = work.get(`${c.bucket}\u0000${c.key}`)?.failure;
      if (failure) throw failure;
    }
  }

  /** The whole batch's keys, once: located, folded, filtered, judged and reconciled mount by mount. */
  private async run(): Promise<Map<string, KeyWork>> {
    const changes = [...this.parsed.values()].flatMap((n) => (n instanceof Error || n.kind === 'test' ? [] : n.changes));
    // The mounts and the keys' live nodes with the clock: one round trip, one connection.
    const { index, prefetched } = await mountsAndSequencers(this.core.pool, changes);
    const byMount = new Map<string, { mount: Mount; keys: KeyChange[]; objects: Map<string, string[]> }>();
    const work = new Map<string, KeyWork>();
    for (const c of changes) {
      const objectKey = `${c.bucket}\u0000${c.key}`;
      const located = index.locate(c.bucket, c.key);
      if (typeof located === 'string') {
        if (!work.has(objectKey)) this.summary.skipped[located]++;
        work.set(objectKey, {});
        continue;
      }
      work.set(objectKey, {});
      for (const { mount, path } of located) {
        const entry = byMount.get(mount.id) ?? { mount, keys: [] as KeyChange[], objects: new Map<string, string[]>() };
        byMount.set(mount.id, entry);
        entry.keys.push({ path, change: c.change === 'deleted' ? 'deleted' : 'created', sequencer: c.sequencer, reported: c.reported });
        entry.objects.set(path, [...(entry.objects.get(path) ?? []), objectKey]);
      }
    }
    // Mount after mount: a mount's reconciliations already use the pool's connections.
    let first = true;
    for (const { mount, keys, objects } of byMount.values()) {
      let failures: Map<string, Error>;
      // The prefetched clock is the first mount's (the others' looks come later: they read their own).
      const pre = first ? prefetched : undefined;
      first = false;
      try {
        failures = await this.settleMount(mount, keys, pre);
      } catch (err) {
        failures = new Map(keys.map((k) => [k.path, err as Error]));
      }
      for (const [path, error] of failures) for (const objectKey of objects.get(path) ?? []) work.set(objectKey, { failure: error });
    }
    return work;
  }

  /** The keys of one mount: the paths that could not be settled, with why. */
  private async settleMount(mount: Mount, events: KeyChange[], prefetched: PrefetchedSequencers | undefined): Promise<Map<string, Error>> {
    const newest = newestPerKey(events);
    const { kept, dropped, recorded, now } = prefetched ? dropStored(newest, prefetched.byMount.get(mount.id) ?? new Map(), prefetched.now) : await dropApplied(this.core.pool, mount.id, newest);
    this.summary.dropped += dropped.length;
    const failures = new Map<string, Error>();
    if (recorded.length > 0) {
      // Their sequencers only (S3's report of a version, not a look at storage: no check time).
      // A crash may take them back harmlessly (the event is then judged against storage again),
      // so the COMMIT does not wait for the WAL flush.
      try {
        await this.core.pool.query(`BEGIN; ${ASYNC_COMMIT_SQL}; ${touchCheckedSql(mount.id, recorded, { checked: false })}; COMMIT`);
        this.summary.recorded += recorded.length;
      } catch (err) {
        for (const r of recorded) failures.set(r.path, err as Error);
      }
    }
    let pending = kept;
    const delays = this.o.retryDelaysMs ?? DEFAULT_RETRY_DELAYS;
    for (let round = 0; pending.length > 0; round++) {
      // The first look's clock is the read of the live nodes, just before it.
      const unsettled = await this.judge(mount, pending, failures, round === 0 ? now : undefined);
      if (unsettled.size === 0) break;
      const delay = delays[round];
      if (delay === undefined) {
        for (const [path, why] of unsettled) failures.set(path, new FilestoreError('UNAVAILABLE', `S3 key ${JSON.stringify(path)} of mount "${mount.key}" could not be settled now (${why}); the event is retried`));
        break;
      }
      await sleep(delay);
      pending = pending.filter((k) => unsettled.has(k.path));
      for (const k of pending) failures.delete(k.path);
    }
    return failures;
  }

  /**
   * One look at `keys` (detectDrift) and the reconciliation of each drifted one. Returns the
   * keys to look at again (held by a command, changed while we looked, a run elsewhere);
   * records hard failures in `failures`.
   */
  private async judge(mount: Mount, keys: KeyChange[], failures: Map<string, Error>, since: Date | undefined): Promise<Map<string, string>> {
    const sequencers = new Map(keys.flatMap((k) => (k.sequencer === undefined ? [] : [[k.path, k.sequencer] as const])));
    const again = new Map<string, string>();
    const targets: JobTarget[] = [];
    // Keys whose state the look found are applied in the judgement's own transaction
    // (apply.ts); the others, and any it leaves, are reconciled one by one.
    const apply = new BatchApply(this.core, mount, sequencers, { s3MissingGraceMs: this.o.s3MissingGraceMs, log: this.o.log });
    let result: Awaited<ReturnType<typeof detectDrift>>;
    try {
      result = await detectDrift(
        this.core,
        mount,
        { changes: new Map(keys.map((k) => [k.path, k.change])), sequencers, since },
        {
          reason: 's3_event',
          skipCoveredByListings: false,
          dispatch: async (t) => (targets.push(...t), t.length),
          inTransaction: apply,
        },
      );
    } catch (err) {
      apply.discard();
      throw err;
    }
    const applied = new Set(await apply.committed());
    this.summary.judged += result.checked;
    this.summary.reconciled += applied.size;
    for (const p of [...result.deferred, ...result.waiting]) again.set(p, 'held by a command');
    const single = targets.filter((t) => t.recursive || !applied.has(t.path));
    const concurrency = this.o.concurrency ?? Math.max(1, poolMax(this.core.pool) - 1);
    await forEachLimited(single, concurrency, async (target) => {
      try {
        const done = await reconcilePath(
          this.core,
          { mountId: mount.id, path: target.path, reason: 's3_event', recursive: target.recursive, hash: false, sequencer: sequencers.get(target.path) },
          {},
          { s3MissingGraceMs: this.o.s3MissingGraceMs },
        );
        if (done.outcome === 'succeeded' && (done.result?.deferred ?? 0) === 0) {
          this.summary.reconciled++;
          return;
        }
        if (done.outcome === 'failed') {
          failAt(failures, keys, target.path, done.error instanceof Error ? done.error : new FilestoreError('INTERNAL', `reconciliation of ${target.path} failed`));
          return;
        }
        for (const k of keys) if (covers(target.path, k.path)) again.set(k.path, `reconciliation ${done.outcome}`);
      } catch (err) {
        failAt(failures, keys, target.path, err as Error);
      }
    });
    if (again.size > 0 || failures.size > 0) this.o.log?.warn('S3 event keys not settled', { mount: mount.key, again: Object.fromEntries(again), failed: [...failures.keys()] });
    return again;
  }
}

interface KeyWork {
  failure?: Error;
}

function covers(target: string, path: string): boolean {
  return target === path || target === '' || ancestorsOf(path).includes(target);
}

function failAt(failures: Map<string, Error>, keys: KeyChange[], target: string, error: Error): void {
  for (const k of keys) if (covers(target, k.path)) failures.set(k.path, error);
}
