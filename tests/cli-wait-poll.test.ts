/**
 * `filestore reconcile --wait` asks for the job soon after it was queued, then at a tenth of
 * the time waited so far, never more than every half second: a job of 0.6 s is seen finished
 * within ~0.11 s of its end (a fixed half-second poll could add up to 0.5 s), a long job costs
 * two small GETs a second.
 */
import { describe, expect, it } from 'vitest';
import { pollDelayMs } from '../cli/commands/reconcile.ts';

/** When each poll happens for a wait of `totalMs` (the poll times of the schedule). */
function pollsUntil(totalMs: number): number[] {
  const at: number[] = [];
  for (let t = pollDelayMs(0); ; t += pollDelayMs(t)) {
    at.push(t);
    if (t >= totalMs) return at;
  }
}

describe('reconcile --wait polling', () => {
  it('sees a short job finished soon after it ends', () => {
    for (const jobMs of [30, 200, 650, 1_000]) {
      const seen = pollsUntil(jobMs).at(-1) as number;
      expect(seen - jobMs).toBeLessThanOrEqual(50 + jobMs / 10);
    }
  });

  it('never polls more often than every 50 ms nor less often than every 500 ms', () => {
    for (const elapsed of [0, 10, 400, 4_000, 40_000, 3_600_000]) {
      expect(pollDelayMs(elapsed)).toBeGreaterThanOrEqual(50);
      expect(pollDelayMs(elapsed)).toBeLessThanOrEqual(500);
    }
  });

  it('a ten-minute job costs about two polls a second, not twenty', () => {
    expect(pollsUntil(600_000).length).toBeLessThan(1_250);
  });
});
