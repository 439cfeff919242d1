/**
 * The drift bench's Filestore side: a real agent process (`node dist/filestore.js agent`, as
 * `npm run agent` and the agent image run it) on the bench database and Redis, and a
 * subscriber to the Redis channel `filestore:events` that hands each envelope of the bench's
 * mounts to listeners with its arrival time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { bundleCli, DIST_DIR } from '../../cli/bundle.ts';
import { EVENTS_CHANNEL } from '../../shared/events/bus.ts';

export interface AgentRun {
  readonly agentId: string;
  readonly pid: number;
  /** Its HTTP server (/metrics, /healthz, …). */
  readonly url: string;
  /** Spawn to the "filestore agent … at …" line (catalogue, queues, HTTP and watchers up). */
  readonly startMs: number;
  /** What the agent said about each watcher's backend ("watcher KEY: parcel (…)"). */
  readonly watcherLines: string[];
  readonly logFile: string;
  /** SIGTERM, then waits for the exit (SIGKILL after 60 s); resolves with the exit code. */
  stop(): Promise<number | null>;
  /** Last lines of the agent's stderr, for error messages. */
  tail(lines?: number): Promise<string>;
}

export interface AgentSpec {
  repoRoot: string;
  agentId: string;
  databaseUrl: string;
  redisUrl: string;
  /** FILESTORE_WATCH_DEBOUNCE_MS; undefined leaves it unset (the default, 200 ms). */
  debounceMs?: number | undefined;
  /** FILESTORE_WATCH_BACKEND; undefined leaves it unset (auto). */
  backend?: 'chokidar' | 'parcel' | 'dirs' | 'auto' | undefined;
  logFile: string;
  startTimeoutMs?: number | undefined;
  /** Extra node options, e.g. --cpu-prof (the profile is written when the agent exits after SIGTERM). */
  nodeArgs?: string[] | undefined;
}

/** Spawns the agent with watchers on and waits until it says it is running. */
export async function spawnAgent(spec: AgentSpec): Promise<AgentRun> {
  // The agent reads only its environment: drop any FILESTORE_* of the shell running the bench.
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FILESTORE_')));
  Object.assign(env, {
    DATABASE_URL: spec.databaseUrl,
    REDIS_URL: spec.redisUrl,
    FILESTORE_AGENT_ID: spec.agentId,
    FILESTORE_ENABLE_WATCHERS: 'true',
    FILESTORE_HOST: '127.0.0.1',
    PORT: '0',
    // Required with Redis; nothing dispatches commands to this agent in the bench.
    FILESTORE_COMMAND_SECRET: randomBytes(32).toString('hex'),
  });
  if (spec.debounceMs !== undefined) env.FILESTORE_WATCH_DEBOUNCE_MS = String(spec.debounceMs);
  if (spec.backend !== undefined) env.FILESTORE_WATCH_BACKEND = spec.backend;
  const log = createWriteStream(spec.logFile, { flags: 'a' });
  await bundleCli(); // npm run agent's build step (before the clock starts)
  const t0 = performance.now();
  const child: ChildProcess = spawn(process.execPath, [...(spec.nodeArgs ?? []), join(DIST_DIR, 'filestore.js'), 'agent'], {
    cwd: spec.repoRoot,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const watcherLines: string[] = [];
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (line) => {
    log.write(`${line}\n`);
    if (/^watcher \S+: (chokidar|parcel|dirs|.*ENOSPC|.*inotify)/.test(line)) watcherLines.push(line);
  });
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code, signal) => resolve((exitCode = code ?? (signal ? 128 : null)))));
  const tail = async (lines = 30) => {
    const text = await readFile(spec.logFile, 'utf8').catch(() => '');
    return text.trim().split('\n').slice(-lines).join('\n');
  };
  let url = '';
  const startMs = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the agent did not start within ${spec.startTimeoutMs ?? 120_000} ms`)), spec.startTimeoutMs ?? 120_000);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      log.write(`[stdout] ${line}\n`);
      if (line.startsWith(`filestore agent ${spec.agentId} at `)) {
        url = /^filestore agent \S+ at (\S+?):? /.exec(line)?.[1] ?? '';
        clearTimeout(timer);
        resolve(performance.now() - t0);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the agent exited with ${code} before it was running`));
    });
  }).catch(async (err: Error) => {
    child.kill('SIGKILL');
    await exited;
    throw new Error(`${err.message}; its last log lines:\n${await tail()}`);
  });
  return {
    agentId: spec.agentId,
    pid: child.pid as number,
    url,
    startMs,
    watcherLines,
    logFile: spec.logFile,
    tail,
    async stop() {
      if (exitCode === undefined) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
        await exited;
        clearTimeout(timer);
      }
      await new Promise<void>((resolve) => log.end(resolve));
      return exitCode ?? null;
    },
  };
}

/** An event envelope of SPEC §5 as the bench reads it, with its arrival time. */
export interface ReceivedEvent {
  at: number;
  type: string;
  mountId: string;
  occurredAt: string;
  data: Record<string, unknown>;
}

/** A subscription to `filestore:events` that keeps the envelopes of `mountIds` only (other processes publish there too). */
export class EventTap {
  private readonly listeners = new Set<(e: ReceivedEvent) => void>();
  private readonly mountIds = new Set<string>();
  /** Envelopes of our mounts received so far, by type. */
  readonly counts = new Map<string, number>();

  private constructor(private readonly redis: Redis) {}

  static async open(redisUrl: string): Promise<EventTap> {
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: null });
    const tap = new EventTap(redis);
    redis.on('message', (_channel: string, message: string) => {
      const at = performance.now();
      let e: ReceivedEvent;
      try {
        const raw = JSON.parse(message) as Omit<ReceivedEvent, 'at'>;
        e = { at, type: raw.type, mountId: raw.mountId, occurredAt: raw.occurredAt, data: raw.data ?? {} };
      } catch {
        return;
      }
      if (!tap.mountIds.has(e.mountId)) return;
      tap.counts.set(e.type, (tap.counts.get(e.type) ?? 0) + 1);
      for (const l of tap.listeners) l(e);
    });
    await redis.subscribe(EVENTS_CHANNEL);
    return tap;
  }

  watchMount(mountId: string): void {
    this.mountIds.add(mountId);
  }

  on(fn: (e: ReceivedEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async close(): Promise<void> {
    this.listeners.clear();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
