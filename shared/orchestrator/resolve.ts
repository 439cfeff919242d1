import { FilestoreError } from '../errors.ts';
import { findEntry, finishEntry, patchRequest, type JournalEntry } from '../catalogue/journal.ts';
import { findMount } from '../catalogue/mounts.ts';
import { recoversHere, type ProcessIdentity } from './ownership.ts';
import { recoverEntry, type RecoveryDeps } from './recovery.ts';
import { uploadOpen } from '../catalogue/upload-state.ts';

/**
 * An admin's resolution of one pending journal entry (POST /v1/journal/:id/resolve,
 * `filestore journal resolve ID`): storage is looked at first, as recovery does (resolveEntry),
 * and the entry recorded `succeeded` when storage shows the command's effect (catalogued as the
 * command would have), `failed` when it does not. Nothing is run again: an upload's body is gone.
 * - already final: JOURNAL_ENTRY_NOT_PENDING (409, details.status);
 * - its command is still running (a live process holds it): JOURNAL_ENTRY_IN_PROGRESS (409);
 *   a presigned upload still open: UPLOAD_IN_PROGRESS;
 * - a local mount owned by another agent: RESOLVE_ON_AGENT (409) — only that host sees the disk;
 * - storage unreadable: the storage's error (503 UNAVAILABLE, …); the entry stays pending;
 * - its mount was removed: failed with MOUNT_NOT_FOUND (there is no storage left to judge).
 */
export async function resolvePendingEntry(
  deps: RecoveryDeps,
  identity: ProcessIdentity,
  entryId: number,
  principal: string | null,
): Promise<JournalEntry> {
  const entry = await findEntry(deps.pool, entryId);
  if (!entry) throw new FilestoreError('NOT_FOUND', `no journal entry ${entryId}`);
  assertPending(entry);
  if (uploadOpen(entry)) {
    throw new FilestoreError('UPLOAD_IN_PROGRESS', `journal entry ${entryId} is a presigned upload still open: complete or cancel it, or let it expire`, { journalEntryId: entryId });
  }
  const mount = await findMount(deps.pool, entry.mountId);
  if (!mount) {
    const error = new FilestoreError('MOUNT_NOT_FOUND', `the mount of journal entry ${entryId} was removed; its storage was not judged`).toJSON();
    await finishEntry(deps.pool, entryId, { status: 'failed', error }, [], true);
    return (await findEntry(deps.pool, entryId)) as JournalEntry;
  }
  if (!recoversHere(identity, mount)) {
    throw new FilestoreError(
      'RESOLVE_ON_AGENT',
      `journal entry ${entryId} is on local mount "${mount.key}" of agent "${mount.agentId ?? '?'}": only that host sees its disk; resolve it through that agent's API, or let its recovery (every 30 s) judge it`,
      { journalEntryId: entryId, agentId: mount.agentId, mountId: mount.id },
    );
  }
  if (principal !== null) await patchRequest(deps.pool, entryId, { resolvedBy: principal });
  let outcome;
  try {
    outcome = await recoverEntry(deps, entry);
  } catch (err) {
    const e = err instanceof FilestoreError ? err : new FilestoreError('STORAGE_ERROR', String((err as Error)?.message ?? err));
    throw new FilestoreError(e.code, `storage of mount "${mount.key}" could not be read, so journal entry ${entryId} stays pending: ${e.message}`, {
      ...e.details,
      journalEntryId: entryId,
    });
  }
  const after = (await findEntry(deps.pool, entryId)) as JournalEntry;
  if (outcome === 'skipped' && after.status === 'pending') {
    throw new FilestoreError('JOURNAL_ENTRY_IN_PROGRESS', `journal entry ${entryId} is still being run by a live process; it ends by itself`, { journalEntryId: entryId });
  }
  return after;
}

function assertPending(entry: JournalEntry): void {
  if (entry.status === 'pending') return;
  throw new FilestoreError('JOURNAL_ENTRY_NOT_PENDING', `journal entry ${entry.id} is already ${entry.status}; nothing to resolve`, {
    journalEntryId: entry.id,
    status: entry.status,
  });
}
