import type { WatchProblem } from './types.ts';

const EVERY_MS = 60_000;

/**
 * A mount watcher's problems: each counted (filestore_watcher_events_total{event=<kind>}) and
 * logged at most once a minute per kind (a tree beyond the watch budget reports every file it
 * could not watch), the lines held back counted and said with the next one.
 */
export class ProblemLog {
  /** Problems recorded. */
  count = 0;
  private readonly logged = new Map<string, { at: number; suppressed: number }>();

  constructor(
    private readonly mountKey: string,
    private readonly countEvent: (event: string) => void,
    private readonly log: (line: string) => void,
  ) {}

  record(problem: WatchProblem, consequence = ''): void {
    this.count++;
    this.countEvent(problem.kind);
    this.atMostPerMinute(
      `${problem.kind}:${problem.code ?? ''}`,
      `watcher ${this.mountKey}: ${problem.kind}${problem.code ? ` (${problem.code})` : ''}: ${problem.message}${consequence}`,
    );
  }

  /** Logs `line` unless a line of the same `key` went out less than a minute ago (those are counted, and said with the next one). */
  atMostPerMinute(key: string, line: string): void {
    const now = Date.now();
    const last = this.logged.get(key);
    if (last && now - last.at < EVERY_MS) {
      last.suppressed++;
      return;
    }
    const more = last && last.suppressed > 0 ? ` (and ${last.suppressed} more like it since the last report)` : '';
    this.logged.set(key, { at: now, suppressed: 0 });
    this.log(`${line}${more}`);
  }
}
