import type { WatchProblem } from '../types.ts';

/**
 * errno codes after which the watcher no longer sees the whole tree: the inotify watch budget
 * (ENOSPC from inotify_add_watch) or file descriptors ran out. A rescan is the only way back.
 */
const COVERAGE_LOST = new Set(['ENOSPC', 'EMFILE', 'ENFILE']);

/** Messages of native watchers that mean events were lost (FSEvents, inotify queue overflow). */
const DROPPED = /events were dropped|overflow|no space left on device|too many open files/i;

/** Classifies an error a watcher reported: `overflow` when coverage was lost, `error` otherwise. */
export function classifyProblem(err: unknown): WatchProblem {
  const e = err as { code?: unknown; message?: unknown } | null | undefined;
  const code = typeof e?.code === 'string' ? e.code : codeFromMessage(String(e?.message ?? err));
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const overflow = (code !== undefined && COVERAGE_LOST.has(code)) || DROPPED.test(message);
  return { kind: overflow ? 'overflow' : 'error', message, code };
}

/** @parcel/watcher reports errno only as strerror text inside the message. */
function codeFromMessage(message: string): string | undefined {
  if (/no space left on device/i.test(message)) return 'ENOSPC';
  if (/too many open files/i.test(message)) return 'EMFILE';
  if (/permission denied/i.test(message)) return 'EACCES';
  return /\b(E[A-Z]{3,})\b/.exec(message)?.[1];
}

/** True when the problem is the inotify watch budget running out (the auto chooser then moves to parcel). */
export const isWatchLimit = (p: WatchProblem): boolean => p.code === 'ENOSPC';
