/**
 * A log for lines that repeat while a condition lasts (a background loop failing every pass
 * while PostgreSQL is away): the same line is written at most once per `windowMs`, the next
 * time with how many it stood for. Different lines pass at once.
 */
export function withoutRepeats(log: (line: string) => void, windowMs = 60_000): (line: string) => void {
  const seen = new Map<string, { at: number; more: number }>();
  return (line) => {
    const now = performance.now();
    const last = seen.get(line);
    if (last && now - last.at < windowMs) {
      last.more++;
      return;
    }
    if (seen.size > 100) seen.clear(); // a line that varies every time is not held
    seen.set(line, { at: now, more: 0 });
    log(last && last.more > 0 ? `${line} (and ${last.more} more times since it was last logged)` : line);
  };
}
