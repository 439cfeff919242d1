import type { PoolClient } from '../db/pool.ts';
import { inTransaction } from '../db/pool.ts';
import { asFilestoreError } from '../errors.ts';
import { commitNewFile } from '../catalogue/file-commit.ts';
import { finishEntry } from '../catalogue/journal.ts';
import type { Mount } from '../catalogue/types.ts';
import type { CommandResult, CommandSpec, Step } from './context.ts';

/**
 * The two ways a journal entry ends, each one transaction. Used by the pipeline and by
 * recovery, so an interrupted command ends exactly as an uninterrupted one would.
 */

/** Catalogue changes, journal `succeeded`, the command's events and `filestore.command.completed`. */
export async function commitCommand<Req, Plan, Outcome>(
  client: PoolClient,
  step: Step,
  spec: CommandSpec<Req, Plan, unknown, Outcome>,
  req: Req,
  plan: Plan,
  outcome: Outcome,
  request: Record<string, unknown>,
  recovered = false,
  /** The statement that ends the transaction; the pipeline adds its lock release to it (one round trip). */
  commitSql = 'COMMIT',
): Promise<CommandResult> {
  const file = spec.newFile?.(plan, outcome) ?? null;
  if (file) {
    const completed = { journalEntryId: step.entryId, command: spec.command, status: 'succeeded', request, recovered };
    const result = await commitNewFile(client, step.entryId, step.mount.id, file, completed, recovered, commitSql);
    if (!result) throw new Error(`journal entry ${step.entryId} was not committed: it is no longer pending, or "${file.path}" could not be catalogued`);
    return result as CommandResult;
  }
  return inTransaction(
    client,
    async () => {
      const { result, events } = await spec.commit(step, req, plan, outcome);
      const completed = {
        type: 'filestore.command.completed',
        mountId: step.mount.id,
        data: { journalEntryId: step.entryId, command: spec.command, status: 'succeeded', request, recovered },
      };
      if (!(await finishEntry(client, step.entryId, { status: 'succeeded', result }, [...events, completed], recovered))) {
        throw new Error(`journal entry ${step.entryId} is no longer pending`);
      }
      return result;
    },
    commitSql,
  );
}

/** Journal `failed` with the error, and its `filestore.command.completed` event; the catalogue is untouched. */
export async function recordFailure(
  client: PoolClient,
  mount: Mount,
  command: string,
  entryId: number,
  err: unknown,
  recovered = false,
): Promise<void> {
  const error = asFilestoreError(err).toJSON();
  await finishEntry(
    client,
    entryId,
    { status: 'failed', error },
    [{ type: 'filestore.command.completed', mountId: mount.id, data: { journalEntryId: entryId, command, status: 'failed', error, recovered } }],
    recovered,
  );
}
