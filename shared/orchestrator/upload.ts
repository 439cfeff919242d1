import { FilestoreError, asFilestoreError } from '../errors.ts';
import type { PoolClient } from '../db/pool.ts';
import { findEntry, type JournalEntry } from '../catalogue/journal.ts';
import { getMount } from '../catalogue/mounts.ts';
import type { Mount } from '../catalogue/types.ts';
import type { CommandContext, CommandResult } from './context.ts';
import { stagingIdOf } from './context.ts';
import { assertWritable } from './checks.ts';
import { MAX_UPLOAD_BYTES } from '../backends/s3/limits.ts';
import { commitCommand, recordFailure } from './finish.ts';
import { acquire, lockEntry, pathLocks, release, releaseAll, unlockEntry, type PathLock } from '../catalogue/locks.ts';
import { begin, type PipelineDeps } from './pipeline.ts';
import { resolveEntry } from './recovery.ts';
import { WriteFileInput, parseInput } from './schemas.ts';
import { makeStep } from './step.ts';
import { uploadStateOf, type UploadState } from '../catalogue/upload-state.ts';
import { writeFileCommand, type WriteFileRequest } from './commands/write-file.ts';

/**
 * The three-step upload of an S3 mount, for bodies the API Lambda cannot carry:
 * 1. beginUpload: a `writeFile` journal entry, pending and owned by no process, whose request
 *    carries `upload: {sizeBytes, expiresAt}`; preconditions checked as PUT /v1/files checks them;
 *    a presigned PUT URL of its staging key (`j<entry id>.upload`, so recovery's discardStaging
 *    and the upload staging sweep remove it). At most 5 GiB: one PutObject's limit.
 * 2. The client PUTs the bytes to S3.
 * 3. completeUpload: under the entry's lock and path lock, the staged size (and sha256) checked,
 *    then committed exactly as a streamed write is (journal the hash, copy, catalogue, events).
 *    The URL stays valid after the first PUT, so everything after the HEAD is pinned to the
 *    version the HEAD saw (its ETag: GetObject If-Match, CopyObject x-amz-copy-source-if-match):
 *    bytes replaced meanwhile fail the upload UPLOAD_CHANGED, never commit unhashed bytes.
 * A mismatch fails the entry and removes the staged bytes. Recovery leaves an open upload alone
 * until UPLOAD_GRACE_MS after it expires, then fails it (UPLOAD_EXPIRED) and removes what was
 * staged; cancelUpload (DELETE /v1/uploads/:id) fails it UPLOAD_CANCELLED at once.
 */

export interface UploadRequest {
  path: string;
  sizeBytes: number;
  sha256?: string | undefined;
  expectedVersion?: number | undefined;
}

export interface OpenedUpload {
  entryId: number;
  url: string;
  headers: Record<string, string>;
  expiresAt: Date;
}

export async function beginUpload(deps: PipelineDeps, mountRef: string, r: UploadRequest, ctx: CommandContext, ttlSeconds: number): Promise<OpenedUpload> {
  const input = parseInput(WriteFileInput, { path: r.path, expectedVersion: r.expectedVersion, expectedSha256: r.sha256 });
  if (!Number.isSafeInteger(r.sizeBytes) || r.sizeBytes < 0 || r.sizeBytes > MAX_UPLOAD_BYTES) {
    throw new FilestoreError('VALIDATION_ERROR', `sizeBytes must be 0 to ${MAX_UPLOAD_BYTES} (5 GiB, the most one S3 PUT carries); larger files: multipart uploads are not supported`, {
      maxSizeBytes: MAX_UPLOAD_BYTES,
    });
  }
  const mount = await getMount(deps.pool, mountRef);
  if (mount.kind !== 's3') {
    throw new FilestoreError('VALIDATION_ERROR', `mount "${mount.key}" is local: presigned uploads are for S3 mounts; send the bytes with PUT /v1/files to the owning agent`);
  }
  const expiresAt = new Date(Date.now() + ttlSeconds * 1000);
  const request = { ...writeFileCommand.journalRequest({ ...input, body: undefined as never }), upload: { sizeBytes: r.sizeBytes, expiresAt: expiresAt.toISOString() } };
  const client = await deps.pool.connect();
  let broken = false;
  try {
    const begun = await begin(deps, client, [input.path], {
      mountId: mount.id,
      command: 'writeFile',
      request,
      idempotencyKey: null,
      requestFingerprint: null,
      principal: ctx.principal ?? null,
      correlationId: ctx.correlationId ?? null,
    });
    if (begun === 'missingMount') throw new FilestoreError('MOUNT_NOT_FOUND', `no mount "${mountRef}"`);
    const current: Mount = { ...mount, accessMode: begun.accessMode, state: begun.state };
    const step = makeStep(client, current, deps.backends.forMount(current), begun.entryId, { covered: begun.covered, nodes: begun.nodes });
    try {
      assertWritable(current);
      await writeFileCommand.prepare(step, { ...input, body: undefined as never });
    } catch (err) {
      await recordFailure(client, current, 'writeFile', begun.entryId, err);
      await deps.afterCommit(current.id).catch(() => undefined);
      throw asFilestoreError(err);
    }
    const direct = (await s3Direct())(current, deps.backends.s3Defaults);
    let url: string;
    try {
      url = await direct.presignPut(direct.uploadKey(stagingIdOf(begun.entryId)), r.sizeBytes, ttlSeconds);
    } catch (err) {
      // No URL, no upload: the caller never learns its id, so the entry must not hold the path.
      await recordFailure(client, current, 'writeFile', begun.entryId, err);
      await deps.afterCommit(current.id).catch(() => undefined);
      throw asFilestoreError(err);
    }
    return { entryId: begun.entryId, url, headers: { 'content-length': String(r.sizeBytes), 'content-type': 'application/octet-stream', 'if-none-match': '*' }, expiresAt };
  } finally {
    // The entry outlives this request: its owner is the upload's expiry, not this session.
    await releaseAll(client).catch(() => {
      broken = true;
    });
    client.release(broken ? new Error('discard connection') : undefined);
  }
}

/** Checks and commits a staged upload; a completed upload answers its first result again. */
export async function completeUpload(deps: PipelineDeps, entryId: number, ctx: CommandContext): Promise<CommandResult> {
  const first = await findEntry(deps.pool, entryId);
  if (!first || !uploadStateOf(first) || (first.principal ?? null) !== (ctx.principal ?? null)) {
    throw new FilestoreError('NOT_FOUND', `no upload ${entryId} of yours; start one with POST /v1/uploads`);
  }
  if (first.status !== 'pending') return finished(first);
  const path = first.request.path as string;
  const locks = pathLocks(first.mountId, [path]);
  const client = await deps.pool.connect();
  let broken = false;
  try {
    await lockEntry(client, entryId); // a second completion waits for the first, then answers its result
    await acquire(client, locks);
    const entry = (await findEntry(client, entryId)) as JournalEntry;
    if (entry.status !== 'pending') return finished(entry);
    const upload = uploadStateOf(entry) as UploadState;
    const mount = await getMount(client, entry.mountId);
    const step = makeStep(client, mount, deps.backends.forMount(mount), entryId);
    const direct = (await s3Direct())(mount, deps.backends.s3Defaults);
    const key = direct.uploadKey(stagingIdOf(entryId));
    const req: WriteFileRequest = {
      path,
      body: undefined as never,
      expectedVersion: entry.request.expectedVersion as number | undefined,
      expectedSha256: entry.request.expectedSha256 as string | undefined,
    };
    const fail = async (err: FilestoreError): Promise<never> => {
      await step.backend.discardStaging(stagingIdOf(entryId));
      await recordFailure(client, mount, 'writeFile', entryId, err);
      await deps.afterCommit(mount.id).catch(() => undefined); // the recorded failure is the answer
      throw err;
    };
    const staged = await direct.stat(key);
    if (staged === null) {
      throw new FilestoreError('UPLOAD_INCOMPLETE', `nothing was PUT to upload ${entryId}'s URL yet; PUT the bytes, then complete it (before ${upload.expiresAt})`, {
        journalEntryId: entryId,
        expiresAt: upload.expiresAt,
      });
    }
    const size = staged.sizeBytes;
    if (size !== upload.sizeBytes) {
      return await fail(new FilestoreError('SIZE_MISMATCH', `upload ${entryId}: ${size} bytes arrived, ${upload.sizeBytes} were announced; nothing was written`, { journalEntryId: entryId, expectedSizeBytes: upload.sizeBytes, actualSizeBytes: size }));
    }
    let sha256: string;
    try {
      sha256 = await direct.sha256Of(key, staged.etag);
    } catch (err) {
      const error = asFilestoreError(err);
      if (error.code === 'UPLOAD_CHANGED') return await fail(error);
      throw error;
    }
    if (req.expectedSha256 !== undefined && req.expectedSha256 !== sha256) {
      return await fail(new FilestoreError('CHECKSUM_MISMATCH', `upload ${entryId}: the bytes do not match the expected sha256; nothing was written`, { journalEntryId: entryId, expectedSha256: req.expectedSha256, actualSha256: sha256 }));
    }
    let plan;
    try {
      assertWritable(mount);
      plan = await writeFileCommand.prepare(step, req); // the file may have changed since the upload began
    } catch (err) {
      return await fail(asFilestoreError(err));
    }
    // From here on as a streamed write: journaled before the bytes become visible (recovery
    // completes the entry only if the file has exactly this hash).
    await step.journal({ contentSha256: sha256, contentSizeBytes: size });
    let write;
    try {
      write = await direct.commit(key, path, size, sha256, staged.etag); // UPLOAD_CHANGED: nothing copied, the entry fails below
    } catch (err) {
      const error = asFilestoreError(err);
      const decided = await resolveEntry(step, (await findEntry(client, entryId)) as JournalEntry, error, false);
      await deps.afterCommit(mount.id).catch(() => undefined);
      if (decided === 'failed') throw error;
      return (await findEntry(client, entryId))?.result as CommandResult;
    }
    let result: CommandResult;
    try {
      const outcome = await writeFileCommand.observe(step, req, plan, write);
      result = await commitCommand(client, step, writeFileCommand, req, plan, outcome, entry.request);
      deps.ownWrites?.forget(mount.id);
    } catch {
      broken = true;
      throw new FilestoreError('INTERNAL', `upload ${entryId} reached storage but could not be recorded; its journal entry stays pending until recovery resolves it`, {
        journalEntryId: entryId,
      });
    }
    // Committed: the answer is the result whatever follows. What the nudge would publish, the
    // outbox publishes; a staged object left behind, the upload staging sweep removes.
    await deps.afterCommit(mount.id).catch(() => undefined);
    await direct.remove(key);
    return result;
  } finally {
    await releaseUploadLocks(client, locks, entryId, broken);
  }
}

export interface CancelledUpload {
  uploadId: number;
  /** 'cancelled' when this or an earlier cancel failed it; otherwise how it had already ended. */
  status: 'cancelled' | 'succeeded' | 'failed';
  error?: { code: string; message: string } | undefined;
}

/**
 * Gives up an upload: the entry failed UPLOAD_CANCELLED, its staged bytes removed, its path free.
 * Its starter or an admin (`asAdmin`) may; again, or once it has ended: how it ended, unchanged.
 */
export async function cancelUpload(deps: PipelineDeps, entryId: number, ctx: CommandContext, asAdmin: boolean): Promise<CancelledUpload> {
  const first = await findEntry(deps.pool, entryId);
  if (!first || !uploadStateOf(first) || (!asAdmin && (first.principal ?? null) !== (ctx.principal ?? null))) {
    throw new FilestoreError('NOT_FOUND', `no upload ${entryId} of yours`);
  }
  const locks = pathLocks(first.mountId, [first.request.path as string]);
  const client = await deps.pool.connect();
  let broken = false;
  try {
    await lockEntry(client, entryId); // after a completion in progress: its result stands
    await acquire(client, locks);
    const entry = (await findEntry(client, entryId)) as JournalEntry;
    if (entry.status === 'pending') {
      const mount = await getMount(client, entry.mountId);
      const step = makeStep(client, mount, deps.backends.forMount(mount), entryId);
      const cancelled = new FilestoreError('UPLOAD_CANCELLED', `upload ${entryId} was cancelled; its bytes were removed, start a new upload`, { journalEntryId: entryId });
      if (entry.request.contentSha256 === undefined) {
        await step.backend.discardStaging(stagingIdOf(entryId));
        await recordFailure(client, mount, 'writeFile', entryId, cancelled);
      } else {
        // A completion that journaled its hash and died: storage decides, as recovery would.
        await resolveEntry(step, entry, cancelled);
      }
      await deps.afterCommit(mount.id).catch(() => undefined);
    }
    const ended = (await findEntry(client, entryId)) as JournalEntry;
    if (ended.status === 'succeeded') return { uploadId: entryId, status: 'succeeded' };
    const error = ended.error ?? { code: 'INTERNAL', message: 'upload failed' };
    return { uploadId: entryId, status: error.code === 'UPLOAD_CANCELLED' ? 'cancelled' : 'failed', error: { code: error.code, message: error.message } };
  } catch (err) {
    broken = true;
    throw err;
  } finally {
    await releaseUploadLocks(client, locks, entryId, broken);
  }
}

// The AWS SDK is loaded with the first S3 mount used, not by every process that imports the orchestrator.
const s3Direct = async () => (await import('../backends/s3/direct.ts')).directTransfers;

function finished(entry: JournalEntry): CommandResult {
  if (entry.status === 'succeeded') return entry.result as CommandResult;
  const e = entry.error ?? { code: 'INTERNAL', message: 'upload failed' };
  throw new FilestoreError(e.code as FilestoreError['code'], e.message, e.details);
}

/**
 * Gives back a complete's or a cancel's path locks and entry lock, then the connection; a
 * connection that failed (or failed to unlock) is discarded, since its locks must go with it.
 */
async function releaseUploadLocks(client: PoolClient, locks: PathLock[], entryId: number, broken: boolean): Promise<void> {
  if (!broken) {
    await release(client, locks).catch(() => (broken = true));
    await unlockEntry(client, entryId).catch(() => (broken = true));
  }
  client.release(broken ? new Error('discard connection: locks must go with it') : undefined);
}
