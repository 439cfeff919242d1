/**
 * Within this long of a first signal, the same signal again is the same request: a Ctrl-C in a
 * terminal reaches `npm start`'s node twice, once from the terminal (the whole foreground
 * process group gets it) and once forwarded by npm.
 */
export const REPEAT_WINDOW_MS = 1000;

export interface StopOnSignalsOptions {
  /**
   * The process that started this one (npm, npx, a shell) going away is a stop too
   * (`npx filestore start` killed with SIGTERM does not pass the signal on).
   */
  followParent?: boolean | undefined;
  /** The same signal again within this long is ignored (default REPEAT_WINDOW_MS; 0: never). */
  repeatWindowMs?: number | undefined;
  /** What the first signal's line says is happening (after `NAME: SIGNAL, `). */
  finishing?: string | undefined;
  /** What a later signal's line says (after `NAME: SIGNAL again, `). */
  forcing?: string | undefined;
  /** Log `NAME: stopped` once the stop is done (default true). */
  sayStopped?: boolean | undefined;
}

/**
 * The one stop of a long-running process (the agent, `filestore start`, the reconcile worker) on
 * SIGTERM/SIGINT: `stop` runs (running work finishes), then the process exits 0, or 1 if `stop`
 * failed. The same signal again within `repeatWindowMs` is the same request (ignored); a signal
 * after that exits at once with 1 (interrupted work is recovered by the next start: journal
 * recovery, stalled-job retries, the catch-up rescan).
 * Returns the stop, for other reasons to stop (the reason is logged in place of the signal).
 */
export function stopOnSignals(stop: () => Promise<void>, log: (line: string) => void, name: string, options: StopOnSignalsOptions = {}): (reason: string) => void {
  const repeatWindowMs = options.repeatWindowMs ?? REPEAT_WINDOW_MS;
  const finishing = options.finishing ?? 'finishing running work (a second signal, a moment later, exits without waiting)';
  const forcing = options.forcing ?? 'exiting without waiting (the next start recovers interrupted work)';
  let first: { reason: string; at: number } | null = null;
  const onSignal = (reason: string) => {
    if (first) {
      if (reason === first.reason && performance.now() - first.at < repeatWindowMs) return; // the same Ctrl-C, twice delivered
      log(`${name}: ${reason} again, ${forcing}`);
      process.exit(1);
    }
    first = { reason, at: performance.now() };
    log(`${name}: ${reason}, ${finishing}`);
    stop().then(
      () => {
        if (options.sayStopped !== false) log(`${name}: stopped`);
        process.exit(0);
      },
      (err: Error) => {
        log(`${name}: stopped with an error: ${err.message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  const parent = process.ppid;
  if (options.followParent && parent > 1) {
    // process.ppid is asked of the system each time: an orphan is adopted by init or a subreaper.
    const timer = setInterval(() => {
      if (process.ppid !== parent) {
        clearInterval(timer);
        onSignal(`its launcher (pid ${parent}) is gone`);
      }
    }, 500);
    timer.unref();
  }
  return onSignal;
}
