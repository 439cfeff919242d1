import { Redis } from 'ioredis';
import { RedisHealth } from '../redis/health.ts';

/**
 * Read-through cache for catalogue reads (node by path, rollups), invalidated per mount.
 *
 * Every committed change in a mount bumps that mount's generation; values are stored under
 * the generation they were read in and written only if it is still current (one Lua call),
 * so a reader that raced a commit can never store a value older than the commit.
 * Guarantee: after a command returns, no reader sees the state before it. Non-guarantee: a
 * reader may see the pre-commit state in the instant between a commit and its bump.
 */
export interface ReadThroughCache {
  read<T>(mountId: string, key: string, load: () => Promise<T>): Promise<T>;
  /** The same, as the stored JSON text (an HTTP answer can send it without parsing it first). */
  readJson(mountId: string, key: string, load: () => Promise<unknown>): Promise<string>;
  invalidateMount(mountId: string): Promise<void>;
  /** Throws when the cache's store does not answer (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

const READ = `
local gen = redis.call('GET', KEYS[1]) or '0'
return {gen, redis.call('GET', ARGV[1] .. gen .. ':' .. ARGV[2])}`;

const WRITE = `
local gen = redis.call('GET', KEYS[1]) or '0'
if gen ~= ARGV[3] then return 0 end
redis.call('SET', ARGV[1] .. gen .. ':' .. ARGV[2], ARGV[4], 'EX', tonumber(ARGV[5]))
return 1`;

interface CacheScripts {
  filestoreCacheRead(genKey: string, prefix: string, key: string): Promise<[string, string | null]>;
  filestoreCacheWrite(genKey: string, prefix: string, key: string, gen: string, value: string, ttl: number): Promise<number>;
}

export class RedisReadThroughCache implements ReadThroughCache {
  private readonly redis: Redis;
  /** An outage is logged once (reads meanwhile are uncached, invalidations fail as RedisUnavailableError). */
  private readonly health: RedisHealth;

  constructor(url: string, private readonly ttlSeconds = 300, log: (line: string) => void = () => {}) {
    this.health = new RedisHealth('cache', log);
    // Auto-pipelining sends the reads of concurrent requests in one write; the scripts run
    // by EVALSHA (defineCommand), not by shipping their text every time.
    this.redis = this.health.watch(new Redis(url, { maxRetriesPerRequest: 2, enableAutoPipelining: true }));
    this.redis.defineCommand('filestoreCacheRead', { numberOfKeys: 1, lua: READ });
    this.redis.defineCommand('filestoreCacheWrite', { numberOfKeys: 1, lua: WRITE });
    this.redis.on('ready', () => this.payOwedBumps());
  }

  /**
   * Mounts whose generation bump failed (Redis unreachable from here): a value cached before
   * that commit is stale. Other processes may still reach Redis and read it, so the bump is
   * owed, and sent as soon as this connection is ready again; meanwhile this process reads those
   * mounts uncached. Stale reads elsewhere thus last as long as this process cannot reach Redis,
   * not until the entries expire.
   */
  private readonly owedBumps = new Set<string>();

  private retryTimer: NodeJS.Timeout | null = null;

  private payOwedBumps(): void {
    for (const mountId of this.owedBumps) void this.invalidateMount(mountId).catch(() => {});
  }

  /** A bump failed: owe it, and try again shortly (the connection may be ready again already). */
  private oweBump(mountId: string): void {
    this.owedBumps.add(mountId);
    if (this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.redis.status === 'ready') this.payOwedBumps();
    }, 1_000);
    this.retryTimer.unref();
  }

  async read<T>(mountId: string, key: string, load: () => Promise<T>): Promise<T> {
    return JSON.parse(await this.readJson(mountId, key, load)) as T;
  }

  async readJson(mountId: string, key: string, load: () => Promise<unknown>): Promise<string> {
    const genKey = `filestore:cache:${mountId}:gen`;
    const prefix = `filestore:cache:${mountId}:`;
    const scripts = this.redis as unknown as CacheScripts;
    // Owed a bump, or Redis known to be unreachable (no wait for the client's retries): uncached.
    if (this.owedBumps.has(mountId) || !this.health.reachable) return JSON.stringify(await load());
    let gen: string;
    try {
      const [g, value] = await scripts.filestoreCacheRead(genKey, prefix, key);
      if (value !== null && value !== undefined) return value;
      gen = g;
    } catch (err) {
      this.health.failed(err); // logged once per outage
      return JSON.stringify(await load()); // Redis trouble degrades to uncached reads, never to errors.
    }
    const loaded = JSON.stringify(await load());
    scripts.filestoreCacheWrite(genKey, prefix, key, gen, loaded, this.ttlSeconds).catch(() => {});
    return loaded;
  }

  private readonly bumps = new Map<string, { running: Promise<void>; queued: Promise<void> | null }>();

  /**
   * Bumps the mount's generation. Commits that arrive while a bump is in flight share the
   * next one (a bump that started before a commit does not cover it), so a burst of commits
   * costs two Redis calls, not one each.
   */
  invalidateMount(mountId: string): Promise<void> {
    const b = this.bumps.get(mountId);
    if (!b) return this.startBump(mountId);
    b.queued ??= b.running.catch(() => {}).then(() => this.startBump(mountId));
    return b.queued;
  }

  private startBump(mountId: string): Promise<void> {
    if (!this.health.reachable) {
      // Known to be down: owe the bump at once rather than make the commit wait out the retries.
      this.oweBump(mountId);
      return Promise.reject(this.health.unavailable(new Error('Connection is closed.'), 'cache not invalidated'));
    }
    const running: Promise<void> = this.redis
      .incr(`filestore:cache:${mountId}:gen`)
      .then(
        () => {
          this.owedBumps.delete(mountId);
        },
        (err: unknown) => {
          this.oweBump(mountId);
          throw this.health.unavailable(err, 'cache not invalidated');
        },
      )
      .finally(() => {
        const current = this.bumps.get(mountId);
        if (current?.running === running && !current.queued) this.bumps.delete(mountId);
      });
    this.bumps.set(mountId, { running, queued: null });
    return running;
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  async close(): Promise<void> {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.redis.quit().catch(() => {});
  }
}

/** Inline mode: the same generation scheme in process memory, bounded by entry count. */
export class MemoryReadThroughCache implements ReadThroughCache {
  private readonly gens = new Map<string, number>();
  private readonly values = new Map<string, string>();

  constructor(private readonly maxEntries = 10_000) {}

  async read<T>(mountId: string, key: string, load: () => Promise<T>): Promise<T> {
    return JSON.parse(await this.readJson(mountId, key, load)) as T;
  }

  async readJson(mountId: string, key: string, load: () => Promise<unknown>): Promise<string> {
    const gen = this.gens.get(mountId) ?? 0;
    const k = `${mountId}:${gen}:${key}`;
    const hit = this.values.get(k);
    if (hit !== undefined) return hit;
    const loaded = JSON.stringify(await load());
    if ((this.gens.get(mountId) ?? 0) === gen) {
      if (this.values.size >= this.maxEntries) this.values.delete(this.values.keys().next().value as string);
      this.values.set(k, loaded);
    }
    return loaded;
  }

  async invalidateMount(mountId: string): Promise<void> {
    this.gens.set(mountId, (this.gens.get(mountId) ?? 0) + 1);
    for (const k of this.values.keys()) if (k.startsWith(`${mountId}:`)) this.values.delete(k);
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    this.values.clear();
  }
}
