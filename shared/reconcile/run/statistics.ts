/** The catalogue's planner statistics, refreshed beside an audit's work (never awaited by it). */
import { analyzeIfStale } from '../../catalogue/reconcile-writes.ts';
import type { Pool } from '../../db/pool.ts';

/**
 * Statistics kept up with the catalogue (reconcile-writes.ts, analyzeIfStale): looked at when
 * an audit starts, at its checkpoints and when it ends, never awaited by its work, one ANALYZE
 * pass at a time per process. A table is analysed once it changed by STALE_SHARE of its rows
 * since its last ANALYZE (at least STALE_MIN rows): a discovery of N nodes analyses about
 * log2(N / STALE_MIN) times, each reading a sample of bounded size.
 */
const STALE_SHARE = 1;
const STALE_MIN = 5_000;
let analyzing: Promise<unknown> | null = null;
let analyzeAgain: Pool | null = null;
export function refreshStatistics(pool: Pool): void {
  if (analyzing) {
    analyzeAgain = pool; // one more look once this one is done (an audit's end, say)
    return;
  }
  analyzing = analyzeIfStale(pool, { share: STALE_SHARE, minChanged: STALE_MIN })
    .catch(() => {}) // statistics are an optimisation: a failure (no privilege, a closing pool) changes nothing else
    .finally(() => {
      analyzing = null;
      const again = analyzeAgain;
      analyzeAgain = null;
      if (again) refreshStatistics(again);
    });
}
