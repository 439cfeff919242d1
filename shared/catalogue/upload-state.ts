import type { JournalEntry } from './journal.ts';

/** How a presigned upload's pending journal entry is told apart (see upload.ts); read by recovery too. */

/** What an upload's journal entry carries beyond a writeFile request. */
export interface UploadState {
  sizeBytes: number;
  expiresAt: string;
}

/**
 * How long after its URL expires an upload is still left alone (and holds its path). S3 checks a
 * presigned URL when a request starts: a PUT begun just before the expiry may still be arriving,
 * and its client will complete it. Bytes that arrive even later are removed by the staging sweep.
 */
export const UPLOAD_GRACE_MS = 15 * 60 * 1000;

export const uploadStateOf = (entry: Pick<JournalEntry, 'command' | 'request'>): UploadState | null =>
  entry.command === 'writeFile' && entry.request.upload && typeof entry.request.upload === 'object' ? (entry.request.upload as UploadState) : null;

/** True while an upload may still be completed (until its expiry and the grace): recovery must not judge it yet. */
export const uploadOpen = (entry: Pick<JournalEntry, 'command' | 'request'>, now = Date.now()): boolean => {
  const u = uploadStateOf(entry);
  return u !== null && entry.request.contentSha256 === undefined && new Date(u.expiresAt).getTime() + UPLOAD_GRACE_MS > now;
};
