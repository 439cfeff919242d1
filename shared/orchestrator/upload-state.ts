import type { JournalEntry } from '../catalogue/journal.ts';

/** How a presigned upload's pending journal entry is told apart (see upload.ts); read by recovery too. */

/** What an upload's journal entry carries beyond a writeFile request. */
export interface UploadState {
  sizeBytes: number;
  expiresAt: string;
}

export const uploadStateOf = (entry: Pick<JournalEntry, 'command' | 'request'>): UploadState | null =>
  entry.command === 'writeFile' && entry.request.upload && typeof entry.request.upload === 'object' ? (entry.request.upload as UploadState) : null;

/** True while an upload may still be completed: recovery must not judge it yet. */
export const uploadOpen = (entry: Pick<JournalEntry, 'command' | 'request'>, now = Date.now()): boolean => {
  const u = uploadStateOf(entry);
  return u !== null && entry.request.contentSha256 === undefined && new Date(u.expiresAt).getTime() > now;
};
