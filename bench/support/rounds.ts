/**
 * Rounds that alternate the contenders: round r starts with contender r mod n, so no contender
 * always runs first (after the setup of the round) or last, and each sees the machine's drift.
 */

export interface Timed {
  ms: number;
}

export interface Contender<T extends Timed> {
  name: string;
  run(round: number): Promise<T>;
}

/** Runs `rounds` rounds; `setup` (untimed) runs before each round's first contender. */
export async function alternateRounds<T extends Timed>(
  rounds: number,
  contenders: Array<Contender<T>>,
  o: { setup?: (round: number) => Promise<void>; progress?: (line: string) => void } = {},
): Promise<Map<string, T[]>> {
  const results = new Map<string, T[]>(contenders.map((c) => [c.name, []]));
  for (let r = 0; r < rounds; r++) {
    await o.setup?.(r);
    for (let k = 0; k < contenders.length; k++) {
      const c = contenders[(r + k) % contenders.length] as Contender<T>;
      o.progress?.(`round ${r + 1}/${rounds} — ${c.name}…`);
      (results.get(c.name) as T[])[r] = await c.run(r);
    }
  }
  return results;
}

/** The median run by time (the upper middle one for an even count). */
export function medianRun<T extends Timed>(runs: T[]): T {
  if (runs.length === 0) throw new Error('no runs');
  return [...runs].sort((a, b) => a.ms - b.ms)[Math.floor(runs.length / 2)] as T;
}
