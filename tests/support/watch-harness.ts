import { spawn } from 'node:child_process';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { MountWatcher, type MountWatcherOptions } from '../../agent/watch/index.ts';
import type { WatchBackendChoice } from '../../agent/watch/types.ts';
import { findLiveByPath } from '../../shared/catalogue/nodes.ts';
import { PromMetrics } from '../../shared/metrics/prom.ts';
import type { Filestore, FilestoreOptions } from '../../shared/runtime.ts';
import { createTestMount, startFilestore, type TestMount } from './filestore.ts';

/**
 * Watcher tests: a real Filestore (PostgreSQL; in-process events, cache and reconcile queue
 * that runs the real engine and adopts no other test file's jobs), local mounts on temp
 * directories, real watchers on them.
 */

export async function startWatchFilestore(hooks?: FilestoreOptions['hooks']): Promise<Filestore> {
  return startFilestore({
    hooks,
    redisUrl: 'inline',
    recover: false,
    metrics: new PromMetrics({ collectDefaults: false }),
    reconcile: { consume: true, queueRedisUrl: 'inline', mountIds: [], concurrency: 2 },
  });
}

export interface WatchedMount {
  t: TestMount;
  mountId: string;
  root: string;
  watcher: MountWatcher;
  abs(p: string): string;
  /** Writes a file outside Filestore (parents created). */
  writeOutOfBand(p: string, content: string | Buffer): Promise<void>;
  /** Writes a file through Filestore (the orchestrator). */
  writeThrough(p: string, content: string): Promise<{ id: number; version: number }>;
  close(): Promise<void>;
}

/** A fresh local mount watched by `backend` (catch-up off unless asked: tests make their own changes). */
export async function watchedMount(core: Filestore, backend: WatchBackendChoice, o: MountWatcherOptions = {}): Promise<WatchedMount> {
  const t = await createTestMount(core, 'local');
  const root = t.root as string;
  const watcher = new MountWatcher(core, t.mount, { backend, debounceMs: 100, catchUp: false, ...o });
  await watcher.start();
  const abs = (p: string) => path.join(root, p);
  return {
    t,
    mountId: t.mount.id,
    root,
    watcher,
    abs,
    async writeOutOfBand(p, content) {
      await mkdir(path.dirname(abs(p)), { recursive: true });
      await writeFile(abs(p), content);
    },
    async writeThrough(p, content) {
      const r = await core.orchestrator.writeFile(t.mount.id, { path: p }, Readable.from([Buffer.from(content)]));
      return r.node as { id: number; version: number };
    },
    async close() {
      await watcher.close();
      await t.cleanup();
    },
  };
}

/** Polls `probe` until it returns something truthy (generous timeout; no assertion on durations). */
export async function eventually<T>(probe: () => Promise<T | null | undefined | false>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const nodeAt = (core: Filestore, mountId: string, p: string) => findLiveByPath(core.pool, mountId, p);

export interface OutboxRow {
  type: string;
  data: Record<string, unknown>;
}

/** Events of a mount in the outbox, oldest first (optionally of one type). */
export async function outbox(core: Filestore, mountId: string, type?: string): Promise<OutboxRow[]> {
  const { rows } = await core.pool.query<OutboxRow>(
    `SELECT type, data FROM filestore.outbox WHERE mount_id = $1 AND ($2::text IS NULL OR type = $2) ORDER BY id`,
    [mountId, type ?? null],
  );
  return rows;
}

/** drift.detected events the watcher wrote (reason 'watcher') for a path. */
export async function watcherDrift(core: Filestore, mountId: string, p?: string): Promise<OutboxRow[]> {
  const rows = await outbox(core, mountId, 'filestore.drift.detected');
  return rows.filter((r) => r.data.reason === 'watcher' && (p === undefined || r.data.path === p));
}

/**
 * Waits until the watcher has judged everything that happened before now: an out-of-band
 * sentinel file is written and its drift awaited (events arrive in order), then what is
 * pending is judged.
 */
export async function settle(core: Filestore, m: WatchedMount, name = `sentinel-${Date.now()}`): Promise<string> {
  await m.writeOutOfBand(name, 'sentinel');
  await eventually(async () => (await watcherDrift(core, m.mountId, name)).length > 0, `the drift of ${name}`);
  await new Promise((r) => setTimeout(r, 300));
  await m.watcher.flush();
  return name;
}

/** Atomic save as editors do it: write a temp file beside the target, then rename it over the target. */
export async function atomicSave(abs: string, content: string, tempName: string): Promise<void> {
  const tmp = path.join(path.dirname(abs), tempName);
  await writeFile(tmp, content);
  await rename(tmp, abs);
}

/**
 * Writes files (content = the name) from another process, as an outside writer would: the
 * test process's event loop stays free for the watcher, like the agent's would be.
 */
export async function writeFilesOutOfProcess(root: string, names: string[]): Promise<void> {
  const script = `
    const fs = require('node:fs'), path = require('node:path');
    let input = '';
    process.stdin.on('data', (d) => (input += d)).on('end', () => {
      const { root, names } = JSON.parse(input);
      for (const n of names) fs.writeFileSync(path.join(root, n), n);
    });`;
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`writer exited with ${code}`))));
    child.stdin.end(JSON.stringify({ root, names }));
  });
}
