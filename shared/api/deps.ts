import type { Filestore } from '../runtime.ts';
import type { ConfiguredS3Mount } from '../catalogue/s3-mounts.ts';
import { JobWaits } from '../catalogue/job-waits.ts';
import { OutboxTail } from '../events/outbox-tail.ts';
import { createReadiness } from './readiness.ts';
import { UploadSlots } from './upload-slots.ts';

/** What the routes work with; built once per process by `buildApiDeps`, whatever the transport. */
export interface ApiDeps {
  core: Filestore;
  /** Follows published events for the event stream; absent where streaming is impossible (Lambda). */
  events?: OutboxTail | undefined;
  /** Prometheus text for GET /metrics; absent where metrics go elsewhere (Lambda: EMF). */
  metrics?: { contentType: string; text(): Promise<string> } | undefined;
  /** Long polls of reconciliation jobs (GET /v1/reconcile/jobs/:id?waitMs=). */
  jobWaits: JobWaits;
  /** Bounds the uploads streaming at once (each holds a database connection while its bytes arrive). */
  uploads: UploadSlots;
  /** Readiness of the process's dependencies by name ("ok" or the problem). */
  readiness(): Promise<Record<string, string>>;
  /**
   * The largest file body the transport carries (the API Lambda: what fits its 6 MB payload
   * once base64-encoded); absent: no limit. Larger S3 downloads redirect to a presigned URL.
   */
  maxFileBodyBytes?: number | undefined;
  /**
   * The only S3 mounts POST /v1/mounts registers (bucket and prefix; MOUNT_NOT_CONFIGURED for
   * others): the API Lambda's FILESTORE_S3_MOUNTS, since its IAM role reaches no other bucket.
   * Absent (the local server, the agent): any S3 mount is registered.
   */
  configuredS3Mounts?: readonly ConfiguredS3Mount[] | undefined;
  log(line: string): void;
}

export interface ApiDepsOptions {
  log(line: string): void;
  /**
   * Serve GET /v1/events/stream: one tail of the outbox feeds every stream (a long-running
   * process). Without it the route answers 501 NOT_IMPLEMENTED, naming the agent's stream.
   */
  eventStream?: boolean | undefined;
  /** More /readyz checks by name (the agent says whether it has finished starting). */
  readiness?: (() => Promise<Record<string, string>>) | undefined;
  /** GET /metrics' text; null: not served here (default: the core's metrics). */
  metrics?: ApiDeps['metrics'] | null;
  /** See ApiDeps.maxFileBodyBytes. */
  maxFileBodyBytes?: number | undefined;
  /** See ApiDeps.configuredS3Mounts. */
  configuredS3Mounts?: readonly ConfiguredS3Mount[] | undefined;
  /**
   * Hold `GET /v1/reconcile/jobs/:id?waitMs=` until the job settles (default true). The API
   * Lambda answers at once instead: a held request would keep a function instance busy, and
   * its catalogue polled, for each waiting client (JobWaits `hold`).
   */
  longPolls?: boolean | undefined;
}

export interface BuiltApiDeps {
  deps: ApiDeps;
  /** Stops the event tail (open streams end) and answers the long polls of jobs now; the core stays open. */
  close(): void;
}

/**
 * The routes' dependencies built from a core: readiness checks, the upload bound (half the
 * pool), metrics text and, for long-running processes, the event tail. Every transport (the
 * node:http server, the API Lambda's converter) calls this one function.
 */
export async function buildApiDeps(core: Filestore, o: ApiDepsOptions): Promise<BuiltApiDeps> {
  let events: OutboxTail | undefined;
  if (o.eventStream) {
    events = new OutboxTail({ q: core.pool, bus: core.bus, onError: (e) => o.log(`event stream: ${(e as Error).message}`) });
    await events.start();
  }
  const deps: ApiDeps = {
    core,
    events,
    metrics: o.metrics === null ? undefined : (o.metrics ?? core.metrics.exposition ?? undefined),
    log: o.log,
    jobWaits: new JobWaits(core.pool, { hold: o.longPolls ?? true }),
    uploads: UploadSlots.forPool(core.pool.options.max ?? 20),
    readiness: createReadiness({ core, log: o.log, more: o.readiness }),
    maxFileBodyBytes: o.maxFileBodyBytes,
    configuredS3Mounts: o.configuredS3Mounts,
  };
  return {
    deps,
    close: () => {
      events?.stop();
      deps.jobWaits.close();
    },
  };
}
