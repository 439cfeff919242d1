import { analyzeIfStale } from '../catalogue/catalogue-analyze.ts';
import type { Pool } from '../db/pool.ts';

/**
 * Planner statistics kept up with the commands' writes. A command's statements are prepared
 * once per connection (and begin_command's inside its plpgsql function), and their generic
 * plans are kept until the tables' statistics change. Made on a catalogue with no statistics
 * (a new one, autovacuum off or not yet run) they can be anything: on an empty nodes table
 * PostgreSQL costs a lookup by (mount, path) and a full scan of the children index alike and
 * takes the latter, so every write then read every live node, three times (issue 17: 5,000
 * index tuples per lookup after 8,000 writes, PostgreSQL's CPU per write growing with the
 * catalogue until autovacuum's ANALYZE, a minute later or never). An ANALYZE replaces those
 * plans in every session.
 *
 * Looked at after FIRST_CHECK commits, then after twice as many each time (at most every
 * MAX_INTERVAL commits), in the background, one at a time per process: a table is analysed
 * once it changed by STALE_SHARE of its rows since its last ANALYZE (at least STALE_MIN). A
 * catalogue written from empty to N rows by commands is analysed about log(N / STALE_MIN) /
 * log(1 + STALE_SHARE) times, each reading a bounded sample.
 */
const FIRST_CHECK = 32;
const MAX_INTERVAL = 4_096;
const STALE_SHARE = 0.5;
const STALE_MIN = 32;

export class CommandStatistics {
  private commits = 0;
  private nextCheck = FIRST_CHECK;
  private interval = FIRST_CHECK;
  private running: Promise<unknown> | null = null;

  constructor(private readonly pool: Pool) {}

  /** One command committed a change to the catalogue. */
  committed(): void {
    if (++this.commits < this.nextCheck || this.running) return;
    this.interval = Math.min(this.interval * 2, MAX_INTERVAL);
    this.nextCheck = this.commits + this.interval;
    this.running = analyzeIfStale(this.pool, { share: STALE_SHARE, minChanged: STALE_MIN })
      .catch(() => {}) // statistics are an optimisation: a failure (no privilege, a closing pool) changes nothing else
      .finally(() => {
        this.running = null;
      });
  }

  /** The check under way, if any (tests, and a process closing its pool). */
  settled(): Promise<unknown> {
    return this.running ?? Promise.resolve();
  }
}
