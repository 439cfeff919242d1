import type { Backend, EntryStat } from '../backends/types.ts';
import type { PoolClient } from '../db/pool.ts';
import type { CommandName } from '../catalogue/journal.ts';
import type { NewFile } from '../catalogue/file-commit.ts';
import type { NewEvent } from '../catalogue/outbox.ts';
import type { CatalogueNode, Mount } from '../catalogue/types.ts';

/** Who asks, and how to recognise a retry. */
export interface CommandContext {
  principal?: string | undefined;
  correlationId?: string | undefined;
  /** A replay with the same key returns the first result; a different request is IDEMPOTENCY_CONFLICT. */
  idempotencyKey?: string | undefined;
}

/** What one step of a command works with. */
export interface Step {
  q: PoolClient;
  mount: Mount;
  backend: Backend;
  entryId: number;
  /** Records facts in the pending journal entry (autocommit) for recovery to read. */
  journal(patch: Record<string, unknown>): Promise<void>;
  /**
   * Live catalogue nodes by path, as of the start of the command (under its locks): read
   * together with the journal entry for the command's paths and their ancestors, queried
   * for any other path. Absent paths map to null.
   */
  live(paths: string[]): Promise<Map<string, CatalogueNode | null>>;
}

/** What every command returns (and what a replay returns again, byte for byte). */
export interface CommandResult {
  journalEntryId: number;
  /** The node after the change, as JSON (a tombstone for delete). */
  node: Record<string, unknown>;
  [extra: string]: unknown;
}

/**
 * One command, in the phases the orchestrator runs it through:
 * prepare (catalogue checks, no side effects) → apply (the storage operation, nothing else)
 * → observe (reads of what storage now holds) → commit (one transaction).
 * Recovery (recovery.ts) reuses observe-equivalents and commit to finish interrupted commands.
 */
export interface CommandSpec<Req, Plan, Applied, Outcome> {
  command: CommandName;
  /** Paths the command changes; locked exclusively (ancestors shared) for its whole run. */
  paths(req: Req): string[];
  /** The request as journaled (JSON-safe, no body bytes). */
  journalRequest(req: Req): Record<string, unknown>;
  /**
   * Facts known before the command starts (a body already in memory: its sha256 and size),
   * journaled with the `pending` entry itself, where recovery reads them, instead of by a
   * later patch. Not part of what makes two requests the same (the fingerprint) nor of the
   * `filestore.command.completed` event's request.
   */
  journalFacts?(req: Req): Record<string, unknown> | undefined;
  prepare(step: Step, req: Req): Promise<Plan>;
  /** Facts about storage before the change, journaled before apply (recovery compares against them). */
  preState?(step: Step, req: Req, plan: Plan): Promise<Record<string, unknown>>;
  apply(step: Step, req: Req, plan: Plan): Promise<Applied>;
  observe(step: Step, req: Req, plan: Plan, applied: Applied): Promise<Outcome>;
  commit(step: Step, req: Req, plan: Plan, outcome: Outcome): Promise<{ result: CommandResult; events: NewEvent[] }>;
  /**
   * The file to catalogue when the whole commit is one new file under catalogued parents
   * (writeFile's common case): committed with its journal entry and events in one round trip
   * (catalogue/file-commit.ts), the same rows and events as `commit` writes. Null: `commit`.
   */
  newFile?(plan: Plan, outcome: Outcome): NewFile | null;
  /** What the command left on storage at one path, as committed (writeFile): see own-writes.ts. */
  written?(outcome: Outcome): EntryStat | null;
}

/** Test and operations hooks around the storage step (e.g. to kill the process there). */
export interface OrchestratorHooks {
  beforeStorage?(entryId: number): void | Promise<void>;
  afterStorage?(entryId: number): void | Promise<void>;
}

export const asJson = <T>(value: T): Record<string, unknown> =>
  JSON.parse(JSON.stringify(value)) as Record<string, unknown>;

/** The staging id of a command: what it stages on storage is named after its journal entry (recovery finds it by this). */
export const stagingIdOf = (entryId: number): string => `j${entryId}`;
