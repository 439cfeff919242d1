import { ancestorsOf, parentOf } from '../paths.ts';
import type { ReconcileQueue } from './queue.ts';
import type { ReconcileRequest } from './types.ts';

/**
 * Reconcile jobs for a set of paths, planned so a burst never floods the queue: the
 * drift signals (drift.ts: the agent's watcher) and the paths a run had to leave to a
 * follow-up because another writer held them (reconciler.ts).
 *
 * A job names a path: `recursive` covers its whole subtree; otherwise the path and, for a
 * directory, its direct children (shared/reconcile, "Scope"). So:
 * - paths that need their subtree looked at (a new or vanished directory, a kind change
 *   involving one) get a recursive job, and every other target below them is dropped;
 * - two or more other paths in one directory become one non-recursive job for that directory;
 *   a lone one gets a job of its own;
 * - if that is still more than `maxJobs`, targets move up the tree (recursive) until it is not
 *   — at worst one job for the mount root, a full audit.
 * The queue itself coalesces requests for a (mount, path) that is already waiting.
 */
export interface JobTarget {
  path: string;
  recursive: boolean;
}

export const DEFAULT_MAX_JOBS_PER_BATCH = 32;

export function planJobs(targets: readonly JobTarget[], maxJobs = DEFAULT_MAX_JOBS_PER_BATCH): JobTarget[] {
  const recursive = minimalRoots(targets.filter((t) => t.recursive).map((t) => t.path));
  const roots = new Set(recursive);
  const covered = (p: string) => underAny(p, roots);
  const byParent = new Map<string, Set<string>>();
  for (const t of targets) {
    if (t.recursive || covered(t.path)) continue;
    const parent = parentOf(t.path) ?? '';
    let set = byParent.get(parent);
    if (!set) byParent.set(parent, (set = new Set()));
    set.add(t.path);
  }
  let plan: JobTarget[] = recursive.map((path) => ({ path, recursive: true }));
  const flat = new Set<string>();
  for (const [parent, children] of byParent) {
    if (children.size === 1 && !(parent === '' && children.has(''))) flat.add(children.values().next().value as string);
    else flat.add(parent);
  }
  for (const path of flat) if (!covered(path)) plan.push({ path, recursive: false });
  while (plan.length > maxJobs) {
    const up = minimalRoots(plan.map((t) => parentOf(t.path) ?? ''));
    plan = up.map((path) => ({ path, recursive: true }));
  }
  return plan;
}

/** Some planned jobs could not be sent: `unsent` are their targets, `cause` the first failure. */
export class EnqueueError extends Error {
  constructor(
    readonly unsent: JobTarget[],
    override readonly cause: unknown,
  ) {
    super(`${unsent.length} reconcile job(s) could not be queued: ${(cause as Error)?.message ?? String(cause)}`);
    this.name = 'EnqueueError';
  }
}

/**
 * Plans the jobs for `targets` (planJobs) and sends them, each as `request` names it, all at
 * once: each is a few round trips, and the jobs are independent (one path each, joined while
 * waiting). Returns how many requests were sent, once every send has settled; throws an
 * EnqueueError naming the targets whose jobs were not sent.
 */
export async function enqueuePlanned(
  queue: Pick<ReconcileQueue, 'enqueue'>,
  targets: readonly JobTarget[],
  request: Omit<ReconcileRequest, 'path' | 'recursive'>,
  maxJobs = DEFAULT_MAX_JOBS_PER_BATCH,
): Promise<number> {
  if (targets.length === 0) return 0;
  const plan = planJobs(targets, maxJobs);
  const sent = await Promise.allSettled(plan.map((t) => queue.enqueue({ ...request, path: t.path, recursive: t.recursive })));
  const failed = sent.flatMap((r, i) => (r.status === 'rejected' ? [{ target: plan[i] as JobTarget, reason: r.reason as unknown }] : []));
  if (failed.length > 0) throw new EnqueueError(failed.map((f) => f.target), failed[0]?.reason);
  return plan.length;
}

/** True when `path` or one of its ancestors is in `set` (depth lookups, not a scan of the set). */
function underAny(path: string, set: ReadonlySet<string>): boolean {
  if (set.has(path)) return true;
  for (const a of ancestorsOf(path)) if (set.has(a)) return true;
  return false;
}

/** The paths none of whose ancestors is in the list (duplicates removed). */
export function minimalRoots(paths: readonly string[]): string[] {
  const sorted = [...new Set(paths)].sort((a, b) => a.length - b.length);
  const kept = new Set<string>();
  for (const p of sorted) if (!underAny(p, kept)) kept.add(p);
  return [...kept];
}
