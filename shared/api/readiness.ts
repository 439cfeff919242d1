import { MemoryReadThroughCache } from '../cache/read-through.ts';
import { probeDatabase } from '../db/pool.ts';
import type { Filestore } from '../runtime.ts';

/** How long one probe's answer serves every /readyz that asks (and how often PostgreSQL sees a probe at most). */
export const READINESS_CACHE_MS = 1_000;

/**
 * `fn` run by at most one caller at a time, its outcome shared with everyone who asks while it
 * runs and for `cacheMs` after it settled. /readyz is public: without this each request opened
 * a PostgreSQL connection of its own, and a few hundred parallel probes used up the server's
 * max_connections for every process of the catalogue.
 */
export function sharedProbe(fn: () => Promise<void>, cacheMs = READINESS_CACHE_MS): () => Promise<void> {
  let running: Promise<void> | null = null;
  let last: Promise<void> | null = null;
  let settledAt = Number.NEGATIVE_INFINITY;
  return () => {
    if (running) return running;
    if (last && performance.now() - settledAt < cacheMs) return last;
    const probe = fn().finally(() => {
      settledAt = performance.now();
      running = null;
    });
    probe.catch(() => {}); // answered to whoever asks; never an unhandled rejection
    running = last = probe;
    return probe;
  };
}

export interface ReadinessOptions {
  core: Filestore;
  log(line: string): void;
  /** More checks by name ("ok" or a word saying what is not ready); the agent says whether it has started. */
  more?: (() => Promise<Record<string, string>>) | undefined;
  cacheMs?: number | undefined;
}

/**
 * What a check of /readyz says when it does not hold readiness back: "ok", or (redis) "inline":
 * the process uses no Redis at all (REDIS_URL=inline: events, cache and queue in-process), so
 * there is nothing to probe — said as it is rather than reported "ok".
 */
export const READY_WORDS: ReadonlySet<string> = new Set(['ok', 'inline']);

/** /readyz is 200 when every check says a word of READY_WORDS, 503 otherwise. */
export const allReady = (checks: Record<string, string>): boolean => Object.values(checks).every((v) => READY_WORDS.has(v));

/**
 * The checks of /readyz, by name: "ok" or "unavailable"; `redis` is "inline" in a process
 * without Redis (REDIS_URL=inline). Callers (unauthenticated) never see
 * why — pg's and ioredis' messages name hosts, ports and users; the log does, once when a check
 * starts failing (or fails otherwise) and once when it passes again.
 */
export function createReadiness(o: ReadinessOptions): () => Promise<Record<string, string>> {
  // Its own connection: the probe answers while the pool is busy, and readiness is about
  // whether PostgreSQL answers, not whether this process has a connection free.
  const postgres = sharedProbe(() => probeDatabase(o.core.pool), o.cacheMs);
  // REDIS_URL=inline: no Redis anywhere in this core (its cache is the in-process one).
  const noRedis = o.core.cache instanceof MemoryReadThroughCache;
  const redis = sharedProbe(() => o.core.cache.ping(), o.cacheMs);
  const failing = new Map<string, string>(); // check → the reason last logged
  const verdict = (name: string, r: PromiseSettledResult<unknown>): string => {
    if (r.status === 'fulfilled') {
      if (failing.delete(name)) o.log(`readiness: ${name} ok again`);
      return 'ok';
    }
    const reason = r.reason instanceof Error ? r.reason.message : String(r.reason);
    if (failing.get(name) !== reason) o.log(`readiness: ${name} unavailable (${reason})`);
    failing.set(name, reason);
    return 'unavailable';
  };
  return async () => {
    const [pg, rd, more] = await Promise.allSettled([postgres(), noRedis ? Promise.resolve() : redis(), o.more?.() ?? Promise.resolve({})]);
    return {
      postgres: verdict('postgres', pg),
      redis: noRedis ? 'inline' : verdict('redis', rd),
      ...(more.status === 'fulfilled' ? more.value : { process: verdict('process', more) }),
    };
  };
}
