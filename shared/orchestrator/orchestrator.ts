import type { Readable } from 'node:stream';
import type { BackendRegistry } from '../backends/registry.ts';
import type { Pool } from '../db/pool.ts';
import { FilestoreError } from '../errors.ts';
import { getMount } from '../catalogue/mounts.ts';
import type { CommandContext, CommandResult, CommandSpec, OrchestratorHooks } from './context.ts';
import { runCommand, type PipelineDeps } from './pipeline.ts';
import { recoverEntry, recoverPending, type RecoveryOutcome } from './recovery.ts';
import { DeleteInput, MkdirInput, TransferInput, UpdateMetadataInput, WriteFileInput, parseInput } from './schemas.ts';
import { mkdirCommand } from './commands/mkdir.ts';
import { writeFileCommand } from './commands/write-file.ts';
import { deleteCommand } from './commands/delete.ts';
import { copyCommand, moveCommand } from './commands/move-copy.ts';
import { updateMetadataCommand } from './commands/update-metadata.ts';

export interface OrchestratorDeps {
  pool: Pool;
  backends: BackendRegistry;
  hooks?: OrchestratorHooks | undefined;
  /** Runs after every commit that changed a mount: cache invalidation, relay nudge. */
  afterCommit?: ((mountId: string) => Promise<void>) | undefined;
}

/**
 * The one way to change a mount: every command is validated, journaled, applied to storage
 * and recorded in the catalogue (see pipeline.ts for the guarantees).
 * `mountId` takes a mount's id or key.
 */
export class Orchestrator {
  private readonly deps: PipelineDeps;

  constructor(d: OrchestratorDeps) {
    const afterCommit = d.afterCommit ?? (async () => {});
    const recoveryDeps = { pool: d.pool, backends: d.backends, afterCommit };
    this.deps = {
      pool: d.pool,
      backends: d.backends,
      hooks: d.hooks,
      afterCommit,
      recoverEntry: async (entry) => {
        await recoverEntry(recoveryDeps, entry);
      },
    };
    this.recover = () => recoverPending(recoveryDeps);
  }

  /** Resolves journal entries left pending by crashed processes (run at start, and periodically). */
  readonly recover: () => Promise<Record<RecoveryOutcome, number>>;

  async mkdir(mountId: string, input: unknown, ctx: CommandContext = {}): Promise<CommandResult> {
    return this.run(mkdirCommand, mountId, parseInput(MkdirInput, input), ctx);
  }

  /** Streams `body` into a file; the body is consumed exactly once, also on replays (to compare content). */
  async writeFile(mountId: string, input: unknown, body: Readable, ctx: CommandContext = {}): Promise<CommandResult> {
    const req = parseInput(WriteFileInput, input);
    return runCommand(this.deps, writeFileCommand, mountId, { ...req, body }, ctx, body);
  }

  async move(mountId: string, input: unknown, ctx: CommandContext = {}): Promise<CommandResult> {
    const req = parseInput(TransferInput, input);
    await this.assertSameMount(mountId, req.targetMountId);
    return this.run(moveCommand, mountId, req, ctx);
  }

  async copy(mountId: string, input: unknown, ctx: CommandContext = {}): Promise<CommandResult> {
    const req = parseInput(TransferInput, input);
    await this.assertSameMount(mountId, req.targetMountId);
    return this.run(copyCommand, mountId, req, ctx);
  }

  async delete(mountId: string, input: unknown, ctx: CommandContext = {}): Promise<CommandResult> {
    return this.run(deleteCommand, mountId, parseInput(DeleteInput, input), ctx);
  }

  async updateMetadata(mountId: string, input: unknown, ctx: CommandContext = {}): Promise<CommandResult> {
    return this.run(updateMetadataCommand, mountId, parseInput(UpdateMetadataInput, input), ctx);
  }

  private run<Req, Plan, Outcome>(spec: CommandSpec<Req, Plan, Outcome>, mountId: string, req: Req, ctx: CommandContext) {
    return runCommand(this.deps, spec, mountId, req, ctx);
  }

  private async assertSameMount(mountId: string, targetMountId: string | undefined): Promise<void> {
    if (targetMountId === undefined || targetMountId === mountId) return;
    const [a, b] = await Promise.all([getMount(this.deps.pool, mountId), getMount(this.deps.pool, targetMountId)]);
    if (a.id !== b.id) {
      throw new FilestoreError('VALIDATION_ERROR', 'moving or copying between mounts is not supported yet; copy the bytes with get and put');
    }
  }
}
