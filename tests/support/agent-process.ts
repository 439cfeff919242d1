import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import pg from 'pg';
import { hashToken } from '../../shared/api/auth.ts';
import { serveApi, type ApiServer } from '../../shared/api/serve.ts';
import { createMount } from '../../shared/catalogue/mounts.ts';
import { findLiveByPath } from '../../shared/catalogue/nodes.ts';
import type { CatalogueNode, Mount } from '../../shared/catalogue/types.ts';
import type { EventEnvelope } from '../../shared/catalogue/outbox.ts';
import { FilestoreClient } from '../../shared/client/index.ts';
import { ensureDatabase } from '../../shared/db/ensure-database.ts';
import { migrate } from '../../shared/db/migrate.ts';
import { EVENTS_CHANNEL } from '../../shared/events/bus.ts';
import { PromMetrics } from '../../shared/metrics/prom.ts';
import { createFilestore, type Filestore } from '../../shared/runtime.ts';
import { bearerFetch } from './bearer-fetch.ts';
import { TEST_COMMAND_SECRET } from './command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './env.ts';

/**
 * Tests of the on-prem agent as a real process: `node --import tsx cli/index.ts agent`,
 * configured through its environment like an operator would, next to an API-only Filestore
 * in the test process that dispatches commands to it through Redis.
 *
 * Each test file gets a deployment of its own:
 * - a PostgreSQL database of its own (created, migrated, dropped afterwards). The agent
 *   runs the recovery sweep, the reconcile consumer (which adopts every open job row at
 *   start) and the outbox relay over its whole database; on the shared test database it
 *   would resolve, reconcile and publish other test files' work — and an in-process relay
 *   of another file (tests/support/watch-harness.ts) would publish this agent's events on
 *   its in-process bus instead of Redis.
 * - a Redis database number of its own (1–15; one holding keys without this helper's marker
 *   is someone else's and skipped), leased through a key in database 0 and flushed when
 *   taken and when given back: the agent consumes `filestore-reconcile` and
 *   `filestore-reconcile-<agentId>` under its catalogue's prefix (`filestore:<catalogue id>`,
 *   shared/queues/prefix.ts), so fresh databases no longer collide on job ids; a database
 *   of its own still keeps one test's keys from another's. Pub/sub ignores database numbers: events still travel
 *   on `filestore:events`.
 */

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

// ---- an isolated deployment ---------------------------------------------------------------

export interface Deployment {
  databaseUrl: string;
  redisUrl: string;
  /** The test's own connections to that database. */
  pool: pg.Pool;
  close(): Promise<void>;
}

const LEASE_PREFIX = 'filestore-test:agent-redis-db:';
const LEASE_MS = 15 * 60_000;
/** Set in a leased database: its keys are ours to flush once the lease has expired (a run that crashed). */
const MARKER = 'filestore-test:agent-db';

async function leaseRedisDatabase(owner: string): Promise<{ db: number; release(): Promise<void> }> {
  const admin = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 3 });
  const unlease = (db: number) =>
    // Only our own lease (one that expired may have been taken by another run since).
    admin.eval(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`, 1, `${LEASE_PREFIX}${db}`, owner);
  try {
    for (let db = 1; db <= 15; db++) {
      if ((await admin.set(`${LEASE_PREFIX}${db}`, owner, 'PX', LEASE_MS, 'NX')) !== 'OK') continue;
      // A database that holds keys without our marker belongs to something else (a benchmark…): leave it alone.
      const r = new Redis(redisUrlOf(db), { maxRetriesPerRequest: 3 });
      try {
        if ((await r.dbsize()) > 0 && (await r.exists(MARKER)) === 0) {
          await unlease(db);
          continue;
        }
        await r.flushdb();
        await r.set(MARKER, owner);
      } finally {
        await r.quit();
      }
      return {
        db,
        async release() {
          await flushRedisDatabase(db).catch(() => {});
          const a = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 3 });
          try {
            await a.eval(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`, 1, `${LEASE_PREFIX}${db}`, owner);
          } finally {
            await a.quit();
          }
        },
      };
    }
  } finally {
    await admin.quit();
  }
  throw new Error('no free Redis database (1–15) for an agent test: each is leased or used by something else');
}

function redisUrlOf(db: number): string {
  const url = new URL(TEST_REDIS_URL);
  url.pathname = `/${db}`;
  return url.toString();
}

async function flushRedisDatabase(db: number): Promise<void> {
  const r = new Redis(redisUrlOf(db), { maxRetriesPerRequest: 3 });
  try {
    await r.flushdb();
  } finally {
    await r.quit();
  }
}

const DATABASE_PREFIX = 'filestore_agent_';
const ABANDONED_AFTER_MS = 2 * 3600_000;

/** Drops databases of this helper older than two hours that nobody is connected to (runs that crashed before their afterAll). */
async function dropAbandonedDatabases(): Promise<void> {
  const admin = new URL(TEST_DATABASE_URL);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    const { rows } = await client.query<{ datname: string }>('SELECT datname FROM pg_database WHERE starts_with(datname, $1)', [DATABASE_PREFIX]);
    for (const { datname } of rows) {
      const created = parseInt(datname.slice(DATABASE_PREFIX.length).split('_')[0] ?? '', 36);
      if (!(Date.now() - created > ABANDONED_AFTER_MS)) continue;
      // Without FORCE: a database someone still uses is refused, and left alone.
      await client.query(`DROP DATABASE IF EXISTS "${datname.replace(/"/g, '""')}"`).catch(() => {});
    }
  } finally {
    await client.end();
  }
}

/** A fresh PostgreSQL database and a leased Redis database for one test file. */
export async function startDeployment(): Promise<Deployment> {
  const owner = `agent-test-${randomUUID()}`;
  const lease = await leaseRedisDatabase(owner);
  const url = new URL(TEST_DATABASE_URL);
  // The creation time in the name lets a later run drop what a crashed run left behind.
  url.pathname = `/${DATABASE_PREFIX}${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const databaseUrl = url.toString();
  try {
    await dropAbandonedDatabases();
    await ensureDatabase(databaseUrl);
    await migrate(databaseUrl);
  } catch (err) {
    await lease.release();
    throw err;
  }
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  // The database is dropped WITH (FORCE) at close: a connection still closing then hears
  // 57P01, which must not surface as an uncaught error of the test file.
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return {
    databaseUrl,
    redisUrl: redisUrlOf(lease.db),
    pool,
    async close() {
      await pool.end().catch(() => {});
      const admin = new URL(databaseUrl);
      admin.pathname = '/postgres';
      const client = new pg.Client({ connectionString: admin.toString() });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS "${url.pathname.slice(1)}" WITH (FORCE)`);
      } finally {
        await client.end();
      }
      await lease.release();
    },
  };
}

// ---- the agent process ----------------------------------------------------------------------

export const TOKEN = `fs_${randomBytes(32).toString('base64url')}`;
const TOKENS = [{ name: 'test-admin', sha256: hashToken(TOKEN), scopes: ['filestore:admin' as const] }];

export const uniqueAgentId = (prefix = 'agent') => `${prefix}-${randomUUID().slice(0, 12)}`;

export interface AgentProcess {
  readonly agentId: string;
  readonly child: ChildProcess;
  /** PostgreSQL application_name of its sessions (to find them after a SIGKILL). */
  readonly appName: string;
  /** Resolves with its HTTP URL once it printed `filestore agent <id> at <url>: …`. */
  readonly ready: Promise<string>;
  /** Resolves with how it ended: the exit code, or the signal that killed it. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Its last lines of output (stdout and stderr), for failure messages. */
  tail(lines?: number): string;
  /** Resolves once a line of its output (stdout or stderr) matches. */
  line(pattern: RegExp): Promise<RegExpExecArray>;
  /** fetch on the agent's HTTP server (admin token unless `token: null`). */
  call(method: string, p: string, o?: { json?: unknown; body?: BodyInit; headers?: Record<string, string>; token?: string | null }): Promise<Response>;
  get url(): string;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

/**
 * Starts `node --import tsx cli/index.ts agent` with a clean Filestore environment: the
 * deployment's database and Redis, PORT=0, loopback, watchers on with a short debounce, and
 * FILESTORE_API_TOKENS accepting TOKEN (the API process's 307 redirects carry it there), and
 * the deployment's FILESTORE_COMMAND_SECRET (it verifies the commands the API process signs).
 */
export function spawnAgent(deployment: Deployment, agentId: string, env: Record<string, string> = {}): AgentProcess {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(FILESTORE_|DATABASE_URL$|REDIS_URL$|PORT$|PGAPPNAME$)/.test(k)));
  const appName = `agent-test-${agentId}-${randomBytes(3).toString('hex')}`;
  const child = spawn(process.execPath, ['--import', 'tsx', 'cli/index.ts', 'agent'], {
    cwd: REPO_ROOT,
    env: {
      ...base,
      DATABASE_URL: deployment.databaseUrl,
      REDIS_URL: deployment.redisUrl,
      FILESTORE_AGENT_ID: agentId,
      FILESTORE_HOST: '127.0.0.1',
      PORT: '0',
      FILESTORE_ENABLE_WATCHERS: 'true',
      FILESTORE_WATCH_DEBOUNCE_MS: '50',
      FILESTORE_API_TOKENS: JSON.stringify(TOKENS),
      FILESTORE_AUTH: 'required',
      FILESTORE_DB_POOL_SIZE: '10',
      FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET,
      PGAPPNAME: appName,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const lines: string[] = [];
  const waiters: Array<{ pattern: RegExp; resolve: (m: RegExpExecArray) => void }> = [];
  const onLine = (line: string) => {
    lines.push(line);
    if (lines.length > 2_000) lines.splice(0, lines.length - 1_000);
    if (process.env.AGENT_TEST_VERBOSE) process.stderr.write(`[${agentId}] ${line}\n`);
    for (const w of [...waiters]) {
      const m = w.pattern.exec(line);
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  };
  for (const stream of [child.stdout, child.stderr]) {
    let buffer = '';
    stream?.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        onLine(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
      }
    });
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  const tail = (n = 40) => lines.slice(-n).join('\n');
  const line = (pattern: RegExp): Promise<RegExpExecArray> => {
    for (const l of lines) {
      const m = pattern.exec(l);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      waiters.push({ pattern, resolve });
      void exited.then((how) => reject(new Error(`agent ${agentId} exited (${how.signal ?? how.code}) before printing ${pattern}; its output:\n${tail()}`)));
    });
  };
  let url = '';
  const ready = line(/^filestore agent (\S+) at (\S+?): /).then((m) => {
    url = m[2] as string;
    return url;
  });
  ready.catch(() => {}); // awaited by the caller; an early exit is reported there
  return {
    agentId,
    child,
    appName,
    ready,
    exited,
    tail,
    line,
    get url() {
      if (!url) throw new Error(`agent ${agentId} is not ready yet`);
      return url;
    },
    call(method, p, o = {}) {
      const { token, ...rest } = o;
      return bearerFetch(`${url}`, token === undefined ? TOKEN : token, method, p, rest);
    },
  };
}

/** SIGTERM (or `signal`) and waits for the exit; SIGKILL if it has not ended in `graceMs`. */
export async function stopAgent(agent: AgentProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (agent.child.exitCode !== null || agent.child.signalCode !== null) return agent.exited;
  agent.child.kill(signal);
  const timer = setTimeout(() => agent.child.kill('SIGKILL'), graceMs);
  try {
    return await agent.exited;
  } finally {
    clearTimeout(timer);
  }
}

/** Kills every agent this test file started that still runs (afterAll, whatever happened). */
export async function killAgents(): Promise<void> {
  const left = [...running];
  for (const c of left) c.kill('SIGKILL');
  await Promise.all(left.map((c) => new Promise((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve(null) : c.once('exit', resolve)))));
}

/**
 * Waits until PostgreSQL has ended every session of a killed agent: a SIGKILLed process's
 * connections (and the advisory locks that mark its journal entries as owned) go away when
 * the server notices, which on a loaded machine is not immediate.
 */
export async function awaitSessionsGone(pool: pg.Pool, appName: string): Promise<void> {
  await eventually(async () => {
    const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [appName]);
    return rows[0]?.n === 0 ? true : undefined;
  }, `the sessions of ${appName} to end`);
}

// ---- the API-only process and a mount of the agent ---------------------------------------

export interface ApiProcess {
  core: Filestore;
  server: ApiServer;
  url: string;
  /** The typed client, as an application would use it (follows the 307 to the agent). */
  client: FilestoreClient;
  call(method: string, p: string, o?: { json?: unknown; body?: BodyInit; headers?: Record<string, string> }): Promise<Response>;
  close(): Promise<void>;
}

/**
 * An API-only Filestore (no agent id: it executes no local mount) serving HTTP: commands for
 * the agent's mounts go to `filestore-commands-<agentId>`, file bytes are redirected (307).
 * It consumes no reconcile jobs and runs no recovery sweep: that is the agent's work.
 */
export async function startApiProcess(deployment: Deployment, o: { commandWaitMs?: number } = {}): Promise<ApiProcess> {
  const core = await createFilestore({
    databaseUrl: deployment.databaseUrl,
    redisUrl: deployment.redisUrl,
    agentId: null,
    migrate: false,
    recover: false,
    maintenanceIntervalMs: 600_000,
    metrics: new PromMetrics({ collectDefaults: false }),
    reconcile: { consume: false },
    commandWaitMs: o.commandWaitMs,
    commandSecrets: [TEST_COMMAND_SECRET],
  });
  const server = await serveApi({ core, host: '127.0.0.1', port: 0, tokens: TOKENS, log: () => {} });
  return {
    core,
    server,
    url: server.url,
    client: new FilestoreClient({ baseUrl: server.url, token: TOKEN }),
    call: (method, p, o) => bearerFetch(server.url, TOKEN, method, p, o),
    async close() {
      await server.close();
      await core.close();
    },
  };
}

export interface AgentMount {
  mount: Mount;
  root: string;
  abs(p: string): string;
  node(p: string): Promise<CatalogueNode | null>;
  cleanup(): Promise<void>;
}

/** A local mount on a fresh temp directory, assigned to `agentId` (create it before the agent starts: it reads its mounts at start). */
export async function createAgentMount(deployment: Deployment, agentId: string): Promise<AgentMount> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-agent-'));
  const mount = await createMount(deployment.pool, { key: `a-${randomUUID().slice(0, 12)}`, kind: 'local', rootPath: root, agentId });
  return {
    mount,
    root,
    abs: (p) => path.join(root, p),
    node: (p) => findLiveByPath(deployment.pool, mount.id, p),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}

// ---- events on Redis ----------------------------------------------------------------------

export interface RedisEvents {
  /** Events of the watched mounts, in arrival order. */
  readonly events: EventEnvelope[];
  of(mountId: string, type?: string): EventEnvelope[];
  /** Resolves with the first event (received so far or later) that matches. */
  waitFor(match: (e: EventEnvelope) => boolean, what: string, timeoutMs?: number): Promise<EventEnvelope>;
  close(): Promise<void>;
}

/** Subscribes to `filestore:events` with a plain ioredis client, as any consumer would, keeping the events of `mountIds`. */
export async function subscribeEvents(mountIds: () => Iterable<string>): Promise<RedisEvents> {
  const sub = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
  const events: EventEnvelope[] = [];
  const waiters = new Set<() => void>();
  sub.on('message', (_channel: string, message: string) => {
    const e = JSON.parse(message) as EventEnvelope;
    if (![...mountIds()].includes(e.mountId)) return;
    events.push(e);
    for (const w of [...waiters]) w();
  });
  await sub.subscribe(EVENTS_CHANNEL);
  return {
    events,
    of: (mountId, type) => events.filter((e) => e.mountId === mountId && (type === undefined || e.type === type)),
    waitFor(match, what, timeoutMs = 45_000) {
      const seen = events.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const check = () => {
          const e = events.find(match);
          if (!e) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(e);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what} on ${EVENTS_CHANNEL}; received ${JSON.stringify(events.map((e) => [e.type, e.data.path ?? (e.data.node as { path?: string } | undefined)?.path]))}`));
        }, timeoutMs);
        waiters.add(check);
      });
    },
    async close() {
      waiters.clear();
      await sub.quit();
    },
  };
}

/** The path an event is about (drift and missing events carry `path`, reconciled ones their node). */
export const eventPath = (e: EventEnvelope): string | undefined =>
  (e.data.path as string | undefined) ?? (e.data.node as { path?: string } | undefined)?.path;

// ---- waiting and metrics ------------------------------------------------------------------

/** Polls `probe` until it returns something other than undefined (a condition, never a fixed sleep); generous deadline. */
export async function eventually<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 45_000, agent?: AgentProcess): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const why = last ? `: ${(last as Error).message}` : '';
      throw new Error(`timed out waiting for ${what}${why}${agent ? `\nagent output:\n${agent.tail()}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Prometheus text → value per sample (`name{labels}` as written), plus the names that have HELP lines. */
export function parseMetrics(text: string): { names: Set<string>; samples: Map<string, number> } {
  const names = new Set<string>();
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    const help = /^# HELP (\S+) /.exec(line);
    if (help) names.add(help[1] as string);
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return { names, samples };
}

/** The sum of every sample of `name` (all label sets) whose labels contain `labelFilter`. */
export function total(samples: Map<string, number>, name: string, labelFilter = ''): number {
  let sum = 0;
  for (const [key, value] of samples) {
    const brace = key.indexOf('{');
    const n = brace < 0 ? key : key.slice(0, brace);
    if (n === name && key.includes(labelFilter)) sum += value;
  }
  return sum;
}
