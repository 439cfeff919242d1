import type { ReconcileJobRow } from '../../shared/catalogue/jobs.ts';
import { ReconcileError } from '../../shared/reconcile/errors.ts';
import { zeroCounts, type ReconcileCounts, type ReconcileHandler } from '../../shared/reconcile/types.ts';

/** What the handler does for one path, call by call. */
export interface PathScript {
  /** The first N calls throw a retryable error. */
  failTimes?: number;
  /** Throw a non-retryable ReconcileError on the first `fatalTimes` calls (default: none). */
  fatalTimes?: number;
  /** Calls wait for `release(path)` before finishing (or failing). */
  block?: boolean;
}

export interface HandlerCall {
  jobId: number;
  path: string;
  reason: ReconcileJobRow['reason'];
  options: Record<string, unknown>;
  attempts: number;
}

/**
 * A reconcile handler whose behaviour a test scripts per path: it records every call, fails
 * a number of times (retryably or not), or blocks until released. It reports progress once.
 */
export function scriptedHandler() {
  const scripts = new Map<string, PathScript>();
  const calls: HandlerCall[] = [];
  const gates = new Map<string, Array<() => void>>();
  const released = new Set<string>();
  const callWaiters: Array<{ n: number; resolve: () => void }> = [];
  let running = 0;
  let maxRunning = 0;

  const handler: ReconcileHandler = async (job, progress) => {
    const call: HandlerCall = { jobId: job.id, path: job.path, reason: job.reason, options: job.options, attempts: job.attempts };
    calls.push(call);
    for (const w of [...callWaiters]) if (calls.length >= w.n) (callWaiters.splice(callWaiters.indexOf(w), 1), w.resolve());
    running++;
    maxRunning = Math.max(maxRunning, running);
    try {
      const script = scripts.get(job.path) ?? {};
      const nth = calls.filter((c) => c.path === job.path).length;
      await progress({ ...zeroCounts(), checked: 1 });
      if (script.block && !released.has(job.path)) {
        await new Promise<void>((resolve) => gates.set(job.path, [...(gates.get(job.path) ?? []), resolve]));
      }
      if (nth <= (script.fatalTimes ?? 0)) throw new ReconcileError(`scripted fatal failure ${nth}`, false, { nth });
      if (nth <= (script.failTimes ?? 0)) throw new ReconcileError(`scripted failure ${nth}`, true, { nth });
      const counts: ReconcileCounts = { ...zeroCounts(), checked: 1, unchanged: 1 };
      return counts;
    } finally {
      running--;
    }
  };

  return {
    handler,
    calls,
    script(path: string, s: PathScript) {
      scripts.set(path, s);
    },
    /** Lets blocked calls for `path` finish, and later ones not block. */
    release(path: string) {
      released.add(path);
      for (const open of gates.get(path) ?? []) open();
      gates.delete(path);
    },
    releaseAll() {
      for (const path of gates.keys()) this.release(path);
      for (const path of scripts.keys()) released.add(path);
    },
    /** Calls in progress right now, and the most ever at once. */
    get running() {
      return running;
    },
    get maxRunning() {
      return maxRunning;
    },
    callsFor(path: string) {
      return calls.filter((c) => c.path === path);
    },
    /** Resolves once the handler has been called `n` times in all. */
    waitForCalls(n: number): Promise<void> {
      if (calls.length >= n) return Promise.resolve();
      return new Promise((resolve) => callWaiters.push({ n, resolve }));
    },
  };
}

/** Polls `check` until it returns a value other than undefined (the tests' only use of time is this timeout). */
export async function eventually<T>(check: () => Promise<T | undefined>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
