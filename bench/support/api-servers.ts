/**
 * The two servers of the API bench, each in a child process of its own so that neither shares
 * an event loop with the load generator (or with the other):
 *   - ours: createFilestore + serveApi, wired as `npm start` wires them, auth on;
 *   - the peer: a bare node:http server answering one constant JSON body.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile } from 'node:fs/promises';
import { serveApi } from '../../shared/api/serve.ts';
import { createFilestore } from '../../shared/runtime.ts';
import { processCpuSeconds } from './proc.ts';
import { traceSql, type StatementTally } from './sql-trace.ts';

/** The arguments that turn bench/api.ts into one of its server children. */
export const API_CHILD_FLAG = '--child-api-server';
export const BARE_CHILD_FLAG = '--child-bare-server';
const LISTENING_MARKER = 'BENCH_LISTENING ';
const START_TIMEOUT_MS = 60_000;

export interface ServerChild {
  url: string;
  pid: number;
  /** CPU seconds the child has used so far (NaN off Linux). */
  cpuSeconds(): number;
  /** SIGTERM, then waits for the exit (a --cpu-prof profile is written on the way out). */
  stop(): Promise<void>;
  /** With traceSql: the statements counted since the last reset (and counting starts again). */
  sql?(): Promise<StatementTally[]>;
}

export interface SpawnOptions {
  /** bench/api.ts itself. */
  script: string;
  flag: string;
  args: string[];
  /** Extra environment (the token hash for ours). */
  env?: Record<string, string> | undefined;
  /** Write a V8 CPU profile of the child into this directory. */
  cpuProfDir?: string | undefined;
  ticksPerSecond: number;
  /** Count the child's SQL statements (bench/support/sql-trace.ts), read with ServerChild.sql. */
  traceSql?: boolean | undefined;
}

/** Spawns a server child and resolves once it listens. */
export function spawnServer(o: SpawnOptions): Promise<ServerChild> {
  const profile = o.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`] : [];
  const child = spawn(process.execPath, [...profile, '--import', import.meta.resolve('tsx'), o.script, o.flag, ...o.args], {
    stdio: o.traceSql ? ['ignore', 'pipe', 'inherit', 'ipc'] : ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...o.env, ...(o.traceSql ? { BENCH_SQL_TRACE: '1' } : {}) },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${o.flag} did not listen within ${START_TIMEOUT_MS / 1000} s:\n${out}`));
    }, START_TIMEOUT_MS);
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`${o.flag} exited with ${code} before listening:\n${out}`));
    };
    child.once('exit', onExit);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith(LISTENING_MARKER));
      if (!line) return;
      clearTimeout(timer);
      child.off('exit', onExit);
      child.stdout?.removeAllListeners('data').resume();
      resolve(serverChild(child, line.slice(LISTENING_MARKER.length).trim(), exited, o.ticksPerSecond));
    });
  });
}

function serverChild(child: ChildProcess, url: string, exited: Promise<void>, ticksPerSecond: number): ServerChild {
  const pid = child.pid as number;
  const sql = child.connected
    ? () =>
        new Promise<StatementTally[]>((resolve) => {
          child.once('message', (m) => resolve(m as StatementTally[]));
          child.send('sql');
        })
    : undefined;
  return {
    url,
    pid,
    ...(sql ? { sql } : {}),
    cpuSeconds: () => processCpuSeconds(pid, ticksPerSecond),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Ours, in the child: the API over a Filestore, one token (its sha256 in BENCH_API_TOKEN_SHA256)
 * with the scopes of the third argument (default `filestore:read`). With BENCH_SQL_TRACE=1
 * (spawnServer's traceSql) its statements are counted, and sent to the parent when it asks.
 */
export async function runApiServerChild(args: string[]): Promise<void> {
  const [databaseUrl, redisUrl, scopes = 'filestore:read'] = args;
  const sha256 = process.env.BENCH_API_TOKEN_SHA256;
  if (!databaseUrl || !redisUrl || !sha256) throw new Error(`usage: BENCH_API_TOKEN_SHA256=… ${API_CHILD_FLAG} <databaseUrl> <redisUrl> [scopes,…]`);
  if (process.env.BENCH_SQL_TRACE === '1') {
    const trace = traceSql();
    process.on('message', () => {
      process.send?.(trace.tally());
      trace.reset();
    });
  }
  const log = (l: string) => process.stderr.write(`[api ${redisUrl === 'inline' ? 'inline' : 'redis'}] ${l}\n`);
  const core = await createFilestore({ databaseUrl, redisUrl, migrate: false, log });
  const server = await serveApi({ core, host: '127.0.0.1', port: 0, tokens: [{ name: 'bench', sha256, scopes: scopes.split(',') as Array<'filestore:read'> }], log });
  untilSigterm(async () => {
    await server.close();
    await core.close();
  });
  process.stdout.write(`${LISTENING_MARKER}${server.url}\n`);
}

/** The peer, in the child: node:http answering every request with the bytes of `bodyFile`. */
export async function runBareServerChild(args: string[]): Promise<void> {
  const [bodyFile] = args;
  if (!bodyFile) throw new Error(`usage: ${BARE_CHILD_FLAG} <bodyFile>`);
  const body = await readFile(bodyFile);
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': body.length });
    res.end(body);
  });
  server.keepAliveTimeout = 65_000; // as ours
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  untilSigterm(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  process.stdout.write(`${LISTENING_MARKER}http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
}

/** Closes on SIGTERM and exits with 0, so that --cpu-prof writes its profile. */
function untilSigterm(close: () => Promise<void>): void {
  process.once('SIGTERM', () => {
    process.disconnect?.();
    close().then(
      () => process.exit(0),
      (err: Error) => {
        process.stderr.write(`close failed: ${err.message}\n`);
        process.exit(1);
      },
    );
  });
}
