import type { AttemptReport } from '../shared/reconcile/index.ts';

/**
 * A job result's counts, in the order the CLI shows them (`deferred`: paths left to a follow-up
 * job; `skipped`: names on storage the catalogue cannot hold): `filestore reconcile --wait`,
 * `filestore jobs` and the worker's lines.
 */
export const COUNTS = ['checked', 'unchanged', 'updated', 'discovered', 'missing', 'deferred', 'skipped'] as const;

/** One line per settled attempt: `job 42 (audit of <mount>:"") succeeded in 1.2s: checked 10, …`. */
export function describeAttempt(r: AttemptReport): string {
  const job = r.job;
  const what = job ? `${job.reason} of ${job.mountId}:${JSON.stringify(job.path)}` : 'unknown';
  const took = `${(r.durationMs / 1000).toFixed(r.durationMs < 10_000 ? 2 : 0)}s`;
  const counts = job?.result ? COUNTS.map((k) => `${k} ${String(job.result?.[k] ?? 0)}`).join(', ') : '';
  const error = r.error === undefined ? '' : `: ${r.error instanceof Error ? r.error.message : String(r.error)}`;
  const attempt = job ? ` (attempt ${job.attempts})` : '';
  switch (r.outcome) {
    case 'succeeded':
      return `job ${r.jobId} (${what}) succeeded in ${took}${counts ? `: ${counts}` : ''}`;
    case 'retried':
      return `job ${r.jobId} (${what}) failed${attempt}, will retry${error}`;
    case 'coalesced':
      return `job ${r.jobId} (${what}) failed${attempt}; job ${String(job?.error?.jobId ?? '?')} waiting for the same path takes over${error}`;
    case 'deferred':
      return `job ${r.jobId} (${what}) put off, no attempt spent${error}; tried again later`;
    default:
      return `job ${r.jobId} (${what}) ${r.outcome}${attempt} after ${took}${error}`;
  }
}
