import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { BackendRegistry } from '../backends/registry.ts';
import type { Pool } from '../db/pool.ts';
import type { ProcessIdentity } from './ownership.ts';
import type { CommandContext, CommandResult, CommandSpec, OrchestratorHooks } from './context.ts';
import { runCommand, type PipelineDeps } from './pipeline.ts';
import { resolvePendingEntry } from './resolve.ts';
import type { JournalEntry } from '../catalogue/journal.ts';
import { recoverPending, type RecoveryCounts, type UnresolvedEntry } from './recovery.ts';
import { DeleteInput, MkdirInput, TransferInput, UpdateMetadataInput, WriteFileInput, parseInput } from './schemas.ts';
import { mkdirCommand } from './commands/mkdir.ts';
import { writeFileCommand } from './commands/write-file.ts';
import { CommandStatistics } from './statistics.ts';
import { deleteCommand } from './commands/delete.ts';
import { copyCommand, moveCommand } from './commands/move-copy.ts';
import { updateMetadataCommand } from './commands/update-metadata.ts';
import { beginUpload, cancelUpload, completeUpload, type CancelledUpload, type OpenedUpload, type UploadRequest } from './upload.ts';
import { UploadStagingSweep, type UploadSweepReport } from './upload-sweep.ts';
import { OwnWrites } from './own-writes.ts';

export interface OrchestratorDeps {
  pool: Pool;
  backends: BackendRegistry;
  hooks?: OrchestratorHooks | undefined;
  /** Runs after every commit that changed a mount: cache invalidation, relay nudge. */
  afterCommit?: ((mountId: string) => Promise<void>) | undefined;
  /** Which mounts' pending entries this process's recovery sweeps judge (see recoversHere). */
  identity?: ProcessIdentity;
}

/**
 * The one way to change a mount: every command is validated, journaled, applied to storage
 * and recorded in the catalogue (see pipeline.ts for the guarantees).
 * `mountId` takes a mount's id or key.
 */
export class Orchestrator {
  private readonly deps: PipelineDeps;
  /** What this process's writes left on storage, for its watchers (own-writes.ts). */
  readonly ownWrites = new OwnWrites();
  /** Planner statistics kept up with this process's commits (statistics.ts). */
  readonly statistics: CommandStatistics;
  private readonly uploadSweep: UploadStagingSweep;

  constructor(d: OrchestratorDeps) {
    const afterCommit = d.afterCommit ?? (async () => {});
    this.statistics = new CommandStatistics(d.pool);
    const recoveryDeps = { pool: d.pool, backends: d.backends, afterCommit };
    this.deps = { pool: d.pool, backends: d.backends, hooks: d.hooks, afterCommit, mounts: new Map(), ownWrites: this.ownWrites, statistics: this.statistics };
    this.recover = (onUnresolved) => recoverPending(recoveryDeps, d.identity, onUnresolved);
    this.resolvePending = (entryId, principal = null) => resolvePendingEntry(recoveryDeps, d.identity, entryId, principal);
    this.uploadSweep = new UploadStagingSweep(d.pool, d.backends);
  }

  /**
   * Resolves journal entries left pending by crashed processes (run at start, and periodically);
   * each entry whose storage could not be read is passed to `onUnresolved`.
   */
  readonly recover: (onUnresolved?: (entry: UnresolvedEntry) => void) => Promise<RecoveryCounts>;

  /** An admin's resolution of one pending entry: storage is looked at, then the entry recorded succeeded or failed (resolve.ts). */
  readonly resolvePending: (entryId: number, principal?: string | null) => Promise<JournalEntry>;

  async mkdir(mountId: string, input: unknown, ctx: CommandContext = {}): Promise<CommandResult> {
    return this.run(mkdirCommand, mountId, parseInput(MkdirInput, input), ctx);
  }

  /**
   * Streams `body` into a file; the body is consumed exactly once, also on replays (to compare
   * content). A body given whole (a Buffer: a small upload read before the command) has its
   * hash journaled with the pending entry: one synchronous commit fewer than a stream's.
   */
  async writeFile(mountId: string, input: unknown, body: Readable | Buffer, ctx: CommandContext = {}): Promise<CommandResult> {
    const req = parseInput(WriteFileInput, input);
    if (!Buffer.isBuffer(body)) return runCommand(this.deps, writeFileCommand, mountId, { ...req, body }, ctx, body);
    const content = { sha256: createHash('sha256').update(body).digest('hex'), sizeBytes: body.length };
    const stream = Readable.from([body]);
    return runCommand(this.deps, writeFileCommand, mountId, { ...req, body: stream, content, bytes: body }, ctx, stream);
  }

  async move(mountId: string, input: unknown, ctx: CommandContext = {}): Promise<CommandResult> {
    return this.run(moveCommand, mountId, parseInput(TransferInput, input), ctx);
  }

  async copy(mountId: string, input: unknown, ctx: CommandContext = {}): Promise<CommandResult> {
    return this.run(copyCommand, mountId, parseInput(TransferInput, input), ctx);
  }

  async delete(mountId: string, input: unknown, ctx: CommandContext = {}): Promise<CommandResult> {
    return this.run(deleteCommand, mountId, parseInput(DeleteInput, input), ctx);
  }

  async updateMetadata(mountId: string, input: unknown, ctx: CommandContext = {}): Promise<CommandResult> {
    return this.run(updateMetadataCommand, mountId, parseInput(UpdateMetadataInput, input), ctx);
  }

  /** Step 1 of a presigned upload (S3 mounts): a pending entry and the URL to PUT the bytes to (see upload.ts). */
  async beginUpload(mountId: string, input: UploadRequest, ctx: CommandContext = {}, ttlSeconds = 900): Promise<OpenedUpload> {
    return beginUpload(this.deps, mountId, input, ctx, ttlSeconds);
  }

  /** Step 3: checks what was PUT and commits it as writeFile does; only its starter (ctx.principal) may complete it. */
  async completeUpload(entryId: number, ctx: CommandContext = {}): Promise<CommandResult> {
    return completeUpload(this.deps, entryId, ctx);
  }

  /** Gives an upload up (its starter, or `asAdmin`): failed UPLOAD_CANCELLED, staged bytes removed; idempotent. */
  async cancelUpload(entryId: number, ctx: CommandContext = {}, asAdmin = false): Promise<CancelledUpload> {
    return cancelUpload(this.deps, entryId, ctx, asAdmin);
  }

  /** One bounded pass of the S3 staging sweep (upload-sweep.ts), run by maintenance. */
  sweepUploadStaging(): Promise<UploadSweepReport> {
    return this.uploadSweep.pass();
  }

  private run<Req, Plan, Applied, Outcome>(spec: CommandSpec<Req, Plan, Applied, Outcome>, mountId: string, req: Req, ctx: CommandContext) {
    return runCommand(this.deps, spec, mountId, req, ctx);
  }
}
