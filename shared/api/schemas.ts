import { MAX_UPLOAD_BYTES } from '../backends/s3/limits.ts';
import { z } from 'zod';

/**
 * The wire shapes of SPEC §4, defined once: requests are validated with them and
 * GET /openapi.json is generated from them (openapi.ts). Command bodies reuse the
 * orchestrator's own input schemas where they coincide.
 */

const iso = z.string().describe('ISO 8601 timestamp');
const isoOrNull = iso.nullable();
const limit = (max: number, def: number) => z.coerce.number().int().min(1).max(max).default(def);
const id = z.coerce.number().int().min(1);

export const ErrorBody = z
  .object({
    error: z.object({
      code: z.string().describe('stable error code, e.g. INVALID_PATH, NOT_FOUND, VERSION_MISMATCH'),
      message: z.string(),
      details: z.record(z.string(), z.unknown()).optional(),
    }),
  })
  .meta({ id: 'Error' });

export const Rollup = z
  .object({ sizeBytes: z.number(), fileCount: z.number(), dirCount: z.number(), childCount: z.number(), lastCalculatedAt: iso })
  .describe('a directory\'s recursive size, file and directory counts and direct child count, of the nodes below it present on storage (ACTIVE or INCONSISTENT; MISSING ones do not count)')
  .meta({ id: 'Rollup' });

export const Node = z
  .object({
    id: z.number(),
    mountId: z.string(),
    path: z.string().describe('mount-relative; the root is ""'),
    parentId: z.number().nullable(),
    name: z.string(),
    kind: z.enum(['file', 'directory', 'symlink']),
    sizeBytes: z.number(),
    sha256: z.string().nullable(),
    etag: z.string().nullable(),
    sequencer: z.string().nullable(),
    mode: z.number().nullable(),
    uid: z.number().nullable(),
    gid: z.number().nullable(),
    mtime: isoOrNull,
    version: z.number(),
    consistencyState: z.enum(['ACTIVE', 'INCONSISTENT', 'MISSING']),
    consistencyCheckedAt: isoOrNull,
    lastDriftDetectedAt: isoOrNull,
    lastReconciledAt: isoOrNull,
    deletedAt: isoOrNull,
    metadata: z.record(z.string(), z.unknown()),
    createdAt: iso,
    updatedAt: iso,
    rollup: Rollup.nullable().optional().describe('directories only'),
  })
  .meta({ id: 'Node' });

export const Mount = z
  .object({
    id: z.string(),
    key: z.string(),
    kind: z.enum(['local', 's3']),
    rootPath: z.string().nullable().describe('a local mount\'s directory on its host; null for S3 mounts, and for callers without the admin scope'),
    bucket: z.string().nullable(),
    prefix: z.string(),
    region: z.string().nullable(),
    endpoint: z.string().nullable(),
    agentId: z.string().nullable(),
    accessMode: z.enum(['rw', 'ro']),
    state: z.enum(['active', 'paused']),
    health: z.enum(['unknown', 'healthy', 'unhealthy']).describe("what the last look at the mount's root found (a reconciliation, or the watcher of its agent)"),
    healthReason: z.string().nullable().describe('without the admin scope, host paths in it read <mount root> and <host path>'),
    healthCheckedAt: isoOrNull,
    createdAt: iso,
    updatedAt: iso,
  })
  .meta({ id: 'Mount' });

export const Snapshot = z
  .object({
    nodeId: z.number(),
    version: z.number(),
    journalEntryId: z.number().nullable(),
    reconciliationJobId: z.number().nullable(),
    state: z.record(z.string(), z.unknown()),
    createdAt: iso,
  })
  .meta({ id: 'Snapshot' });

export const JournalEntry = z
  .object({
    id: z.number(),
    mountId: z.string(),
    command: z.enum(['mkdir', 'writeFile', 'move', 'copy', 'delete', 'updateMetadata']),
    status: z.enum(['pending', 'succeeded', 'failed']),
    idempotencyKey: z.string().nullable().describe('shown to the principal that sent it and to admins; null for others'),
    request: z.record(z.string(), z.unknown()),
    result: z.record(z.string(), z.unknown()).nullable(),
    error: z.object({ code: z.string(), message: z.string(), details: z.record(z.string(), z.unknown()).optional() }).nullable(),
    principal: z.string().nullable(),
    correlationId: z.string().nullable(),
    recovered: z.boolean(),
    createdAt: iso,
    startedAt: iso,
    finishedAt: isoOrNull,
  })
  .meta({ id: 'JournalEntry' });

export const ReconcileJob = z
  .object({
    id: z.number(),
    mountId: z.string(),
    path: z.string(),
    reason: z.enum(['drift', 'audit', 'manual', 's3_event', 'recovery']),
    options: z.record(z.string(), z.unknown()),
    status: z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']),
    attempts: z.number(),
    coalesced: z.number().describe('requests for the same path merged into this job while it waited'),
    result: z
      .object({
        checked: z.number(),
        unchanged: z.number(),
        updated: z.number(),
        discovered: z.number(),
        missing: z.number(),
        deferred: z.number().optional().describe('paths another writer held through the wait, left to a follow-up job'),
        skipped: z.number().optional().describe('names on storage the catalogue cannot hold (control characters, not UTF-8, not NFC, FIFOs, sockets, devices), passed over; known when the walk ends'),
        skippedByReason: z.partialRecord(z.enum(['invalid_name', 'not_utf8', 'not_nfc', 'unsupported_kind']), z.number()).optional(),
        skippedSample: z.array(z.string()).optional().describe('a few of the skipped paths, control characters escaped'),
        stopped: z.object({ after: z.string() }).optional().describe('an audit stopped early at a checkpoint (a deadline): counts up to `after`; the job is queued and continues after it'),
      })
      .catchall(z.unknown())
      .nullable()
      .describe('counts so far while running, final when finished'),
    error: z.record(z.string(), z.unknown()).nullable().describe('without the admin scope, host paths in it read <mount root> and <host path>'),
    createdAt: iso,
    startedAt: isoOrNull,
    finishedAt: isoOrNull,
    updatedAt: iso,
  })
  .meta({ id: 'ReconcileJob' });

/** 202 from POST /v1/reconcile: the job, and whether it still waits for Redis to be queued. */
export const ReconcileAccepted = ReconcileJob.extend({
  queuePending: z.boolean().optional().describe('true: recorded, but Redis was unreachable; it is queued once Redis answers again, and runs then'),
  message: z.string().optional().describe('what queuePending means for this request'),
}).meta({ id: 'ReconcileAccepted' });

/** `{items, nextCursor}`: pass nextCursor back as `cursor` for the next page; null at the end. */
export const page = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), nextCursor: z.string().nullable() });

/** What every command returns (a replay returns it again). */
export const CommandResult = z
  .object({ journalEntryId: z.number(), node: Node })
  .catchall(z.unknown())
  .meta({ id: 'CommandResult' });

/** 202 from a command dispatched to the agent that owns the mount, when it outlasted the wait. */
export const CommandAccepted = z
  .object({
    status: z.literal('accepted'),
    agentId: z.string().describe('the agent running the command'),
    idempotencyKey: z.string().describe('send the command again with this Idempotency-Key to get its result'),
    journalEntry: JournalEntry.nullable().describe("the command's journal entry so far; null while it waits in the agent's queue"),
    message: z.string(),
  })
  .meta({ id: 'CommandAccepted' });

/** 307 from the file routes: the bytes of this local mount are served by its agent, at `location`. */
export const AgentRedirect = z
  .object({ agentId: z.string(), location: z.string().describe('the same request on the agent (also in the Location header)') })
  .meta({ id: 'AgentRedirect' });

// ---- requests -------------------------------------------------------------------------

const mountRef = z.string().min(1).max(100).describe("a mount's id or key");
const cursor = z.string().max(8192).optional().describe('nextCursor of the previous page');

export const MountIdParams = z.object({ id: mountRef });
export const NodeIdParams = z.object({ id });
export const JobIdParams = z.object({ id });
/** The longest a job request waits for the job to settle: well inside API Gateway's 30 s (the API Lambda) and any proxy's idle timeout. */
export const MAX_JOB_WAIT_MS = 20_000;
export const JobWaitQuery = z.object({
  waitMs: z.coerce
    .number()
    .int()
    .min(0)
    .max(MAX_JOB_WAIT_MS)
    .default(0)
    .describe(`a job still queued or running is answered once it has settled, or after this many milliseconds (at most ${MAX_JOB_WAIT_MS}) as it is then: a long poll; 0 (default): at once`),
});

const CheckFlag = z
  .boolean()
  .optional()
  .describe('false: skip the reachability check (the root exists and is usable, the bucket can be listed); the safety rules (absolute root, no filesystem root, no overlap) always apply');

export const CreateMountBody = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('local'),
      key: z.string(),
      rootPath: z.string().min(1).describe('absolute directory on the owning agent host'),
      agentId: z.string().nullable().optional(),
      accessMode: z.enum(['rw', 'ro']).optional(),
      check: CheckFlag,
    })
    .strict(),
  z
    .object({
      kind: z.literal('s3'),
      key: z.string(),
      bucket: z.string().min(3).max(63),
      prefix: z.string().max(1024).optional(),
      region: z.string().optional(),
      endpoint: z.url().optional().describe('S3-compatible server, addressed path-style'),
      accessMode: z.enum(['rw', 'ro']).optional(),
      check: CheckFlag,
    })
    .strict(),
]);

export const PatchMountBody = z
  .object({
    accessMode: z.enum(['rw', 'ro']).optional(),
    state: z.enum(['active', 'paused']).optional(),
    agentId: z.string().nullable().optional(),
  })
  .strict();

export const ListNodesQuery = z.object({
  mountId: mountRef,
  prefix: z.string().max(4096).optional().describe('raw path prefix: "docs/" lists the subtree of docs'),
  state: z.enum(['ACTIVE', 'INCONSISTENT', 'MISSING']).optional(),
  kind: z.enum(['file', 'directory', 'symlink']).optional(),
  limit: limit(1000, 100),
  cursor,
});

export const ByPathQuery = z.object({ mountId: mountRef, path: z.string().max(8192).default('') });
export const PageQuery = z.object({ limit: limit(1000, 100), cursor });

export const FileQuery = z.object({ mountId: mountRef, path: z.string().min(1).max(8192) });

export const MkdirBody = z.object({ mountId: mountRef, path: z.string(), parents: z.boolean().optional() }).strict();
export const TransferBody = z
  .object({
    mountId: mountRef,
    path: z.string(),
    targetPath: z.string(),
    targetMountId: mountRef.optional(),
    overwrite: z.boolean().optional(),
    expectedVersion: z.number().int().min(0).optional(),
  })
  .strict();
export const DeleteBody = z
  .object({ mountId: mountRef, path: z.string(), recursive: z.boolean().optional(), expectedVersion: z.number().int().min(0).optional() })
  .strict();
export const MetadataBody = z
  .object({
    set: z.record(z.string().min(1).max(256), z.unknown()).optional(),
    unset: z.array(z.string().min(1).max(256)).optional(),
  })
  .strict();

export const ReconcileBody = z
  .object({
    mountId: mountRef,
    path: z.string().optional().describe('default: the mount root (an audit)'),
    recursive: z.boolean().optional().describe('default true: the whole subtree; false: the path and its direct children'),
    hash: z.boolean().optional().describe('compare content by sha256 too'),
    force: z.boolean().optional().describe('apply even if more than FILESTORE_MAX_MISSING_RATIO of the mount would become MISSING'),
  })
  .strict();
export const ListJobsQuery = z.object({
  mountId: mountRef.optional(),
  status: z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']).optional(),
  limit: limit(1000, 100),
  cursor,
});

export const JournalQuery = z.object({
  mountId: mountRef.optional().describe('required unless status=pending (every mount\'s pending entries: admin scope)'),
  status: z.enum(['pending', 'succeeded', 'failed']).optional().describe('only entries in this status'),
  after: z.coerce.number().int().min(0).default(0).describe('journal entry id; entries after it'),
  limit: limit(1000, 100),
});

export const JournalEntryParams = z.object({ id });

export const ResolvedEntry = z
  .object({
    outcome: z.enum(['succeeded', 'failed']).describe('succeeded: storage shows the command\'s effect (catalogued); failed: it does not'),
    entry: JournalEntry,
  })
  .meta({ id: 'ResolvedEntry' });

export const RemovedMount = z
  .object({
    mount: Mount,
    nodes: z.number().describe('catalogue nodes removed (with their snapshots and rollups)'),
    jobs: z.number().describe('reconciliation jobs removed'),
    failedEntries: z.number().describe('pending journal entries of crashed commands, recorded failed (MOUNT_NOT_FOUND)'),
  })
  .meta({ id: 'RemovedMount' });

export const EventsQuery = z.object({
  mountId: mountRef.optional(),
  types: z.string().optional().describe('comma-separated event types, e.g. filestore.node.created,filestore.node.deleted'),
  lastEventId: z.coerce.number().int().min(0).optional().describe('same as the Last-Event-ID header'),
});

export const Health = z.object({
  status: z.enum(['ok', 'unavailable']),
  checks: z
    .record(z.string(), z.string())
    .optional()
    .describe('/readyz: each check by name (postgres, redis, and the agent\'s): "ok", "unavailable", or for redis "inline" (REDIS_URL=inline: no Redis is used, nothing to probe); status is "ok" when every check is "ok" or "inline"'),
});

// ---- presigned transfers (S3 mounts; what the API Lambda cannot carry) --------------------

/** 307 from GET /v1/files when the file is larger than the endpoint carries (the API Lambda): S3 serves it. */
export const PresignedDownload = z
  .object({
    location: z.string().describe('a presigned S3 GET URL (also in the Location header); Range is honoured there'),
    expiresInSeconds: z.number(),
  })
  .meta({ id: 'PresignedDownload' });

export const UploadBody = z
  .object({
    mountId: mountRef,
    path: z.string().min(1).max(8192),
    sizeBytes: z
      .number()
      .int()
      .nonnegative()
      .max(MAX_UPLOAD_BYTES, { error: `at most ${MAX_UPLOAD_BYTES} bytes (5 GiB): the most one S3 PUT carries; multipart uploads are not supported` })
      .describe('exact size of the bytes to be PUT (S3 refuses another); at most 5 GiB, the most one S3 PUT carries'),
    sha256: z
      .string()
      .regex(/^([0-9a-fA-F]{64}|[A-Za-z0-9+/]{43}=)$/)
      .optional()
      .describe('sha256 of the bytes, hex or base64; complete fails with CHECKSUM_MISMATCH otherwise'),
    ifMatch: z.number().int().nonnegative().optional().describe('version the file must have when the upload completes (0 = must not exist)'),
  })
  .strict();

export const UploadParams = z.object({ id: z.coerce.number().int().positive() });

/** 201 from POST /v1/uploads: where to PUT the bytes, and until when. */
export const PresignedUpload = z
  .object({
    uploadId: z.number().describe('the journal entry of the upload (pending until completed, failed, or expired)'),
    journalEntryId: z.number(),
    method: z.literal('PUT'),
    url: z.string().describe('presigned S3 URL of the upload’s staging object'),
    headers: z.record(z.string(), z.string()).describe('headers the PUT must carry'),
    expiresAt: z
      .string()
      .describe('the URL’s expiry; an upload not completed by then is failed (UPLOAD_EXPIRED) and its bytes removed by maintenance, after a 15-minute grace for a PUT still arriving'),
    completeUrl: z.string().describe('POST here once the PUT succeeded'),
  })
  .meta({ id: 'PresignedUpload' });

/** 200 from DELETE /v1/uploads/:id. */
export const CancelledUpload = z
  .object({
    uploadId: z.number(),
    status: z.enum(['cancelled', 'succeeded', 'failed']).describe('cancelled (now or before); otherwise how the upload had already ended, unchanged'),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
  })
  .meta({ id: 'CancelledUpload' });
