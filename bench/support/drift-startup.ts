/**
 * Part 3 of the drift bench: watcher start-up on a big mount, one child process per backend.
 *
 * Each child runs the agent's own `watchMounts` on the mount (catch-up rescan off: only the
 * watcher is measured) and reports how long the start took, its RSS before and after, the
 * inotify watches it holds (/proc/self/fdinfo), the problems the watcher logged (ENOSPC
 * included), and a coverage probe: after start, a new file in every directory and a rewrite of
 * one existing file per directory — how many the backend reported within a few seconds.
 * Children run as an unprivileged user when the bench runs as root, so the watch budget
 * (`max_user_watches`, per user) they exhaust is not the one other root processes share.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { watchMounts } from '../../agent/watch/index.ts';
import { createWatchBackend } from '../../agent/watch/backends/index.ts';
import { inotifyWatchCount } from '../../agent/watch/inotify.ts';
import type { WatchBackendChoice, WatchBackendFactory, WatchBackendKind } from '../../agent/watch/types.ts';
import { getMount } from '../../shared/catalogue/mounts.ts';
import { PromMetrics } from '../../shared/metrics/prom.ts';
import { createFilestore } from '../../shared/runtime.ts';
import { randomUUID } from 'node:crypto';
import { createMount } from '../../shared/catalogue/mounts.ts';
import type { Pool } from '../../shared/db/pool.ts';
import { createLeanTree, type TreeShape } from './audit-trees.ts';
import { run } from './big-write.ts';
import { InotifyMonitor, inotifyWatchesOfPid, rssOfPid, trackChild } from './drift-inotify.ts';
import type { StartupPart } from './drift-report.ts';
import { openUp } from './drift-setup.ts';

export const WATCH_CHILD_FLAG = '--child-watch';
/** The user the children run as when the bench runs as root. */
const NOBODY = { uid: 65534, gid: 65534 };
const RESULT_MARKER = 'BENCH_DRIFT_WATCH_RESULT ';

export interface WatchChildSpec {
  label: string;
  databaseUrl: string;
  mountId: string;
  backend: WatchBackendChoice;
  /** Overrides the auto chooser's threshold (a tree that grew past it since the count). */
  autoThreshold?: number | undefined;
  /** Directories (mount-relative, "" = root) and one existing file in each, for the coverage probe. */
  probe: Array<{ dir: string; file: string }>;
}

export interface StartupResult {
  label: string;
  /** watchMounts from the call to its return (backend chosen, tree crawled, watches placed). */
  startMs: number;
  /**
   * From the call until the backend that stays is up: the same as startMs, unless the watcher
   * moved to another backend after watchMounts returned (chokidar out of watches under auto).
   */
  watchingMs: number;
  /** inotify watches of the child the moment watchMounts returned. */
  watchesAtReturn: number | null;
  /** Child spawn to the result line (node, tsx, imports, createFilestore, start, probe, close). */
  processMs: number;
  /** Backend running once start returned, and at the end of the probe (a fallback may happen in between). */
  backendAtStart: WatchBackendKind | null;
  backendAtEnd: WatchBackendKind | null;
  /** watchMounts' `failed` entry, if the watcher did not start. */
  failed: string | null;
  /** All inotify watches of the child once watching, and at the end of the probe. */
  watchesAtStart: number | null;
  watchesAtEnd: number | null;
  rssBeforeKB: number;
  rssAfterStartKB: number;
  peakKB: number;
  problems: number;
  enospc: number;
  /** Watcher log lines (decision, problems, fallback), the first ones. */
  log: string[];
  probe: { dirs: number; created: number; modified: number };
  closeMs: number;
}

export interface PeerStartupResult {
  label: string;
  startMs: number;
  watches: number | null;
  rssKB: number | null;
  failed: string | null;
  probe: { dirs: number; created: number; modified: number };
}

const PROBE_WAIT_MS = 5_000;
const MAX_LOG_LINES = 12;

/** Spawns the child for one backend and returns what it measured. */
export async function measureWatcherStartup(script: string, spec: WatchChildSpec, user: { uid?: number; gid?: number }): Promise<StartupResult> {
  const t0 = performance.now();
  const child = trackChild(
    spawn(process.execPath, ['--import', import.meta.resolve('tsx'), script, WATCH_CHILD_FLAG, JSON.stringify(spec)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      uid: user.uid,
      gid: user.gid,
    }),
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-8000)));
  let result: StartupResult | null = null;
  createInterface({ input: child.stdout }).on('line', (line) => {
    if (line.startsWith(RESULT_MARKER)) result = { ...(JSON.parse(line.slice(RESULT_MARKER.length)) as StartupResult), processMs: performance.now() - t0 };
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (c) => resolve(c));
  });
  if (!result) throw new Error(`watcher child (${spec.label}) exited with ${code} and no result:\n${stderr.trim()}`);
  return result;
}

/** The child's side: argv after the flag is the JSON spec. */
export async function runWatchChild(args: string[]): Promise<void> {
  const spec = JSON.parse(args[0] ?? '{}') as WatchChildSpec;
  const log: string[] = [];
  let enospc = 0;
  // chokidar logs one ENOSPC per file it could not watch: keep the first two of those.
  const note = (line: string) => {
    const isEnospc = /ENOSPC/.test(line);
    if (isEnospc) enospc++;
    if (log.length < MAX_LOG_LINES && (!isEnospc || enospc <= 2)) log.push(line);
  };
  const core = await createFilestore({
    databaseUrl: spec.databaseUrl,
    redisUrl: 'inline',
    poolSize: 4,
    migrate: false,
    recover: false,
    relay: false,
    maintenanceIntervalMs: 3_600_000,
    metrics: new PromMetrics({ collectDefaults: false }),
    // Rescan requests become queued rows (deleted with the mount); nothing runs them here.
    reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [spec.mountId] },
  });
  try {
    const mount = await getMount(core.pool, spec.mountId);
    // Every path a backend reports, to tell which probe files it saw; and when the latest
    // backend created (the one in use, after a fallback too) finished starting.
    const seen = new Set<string>();
    let latest: { kind: WatchBackendKind; upAt: number | null } | null = null;
    const factory: WatchBackendFactory = (kind, root, handlers) => {
      const backend = createWatchBackend(kind, root, {
        onEvents: (events) => {
          for (const e of events) seen.add(e.path);
          handlers.onEvents(events);
        },
        onProblem: (p) => handlers.onProblem(p),
      });
      const mine = { kind, upAt: null as number | null };
      latest = mine;
      return {
        kind: backend.kind,
        start: async () => {
          await backend.start();
          mine.upAt = performance.now();
        },
        close: () => backend.close(),
        watchCount: () => backend.watchCount(),
      };
    };
    globalThis.gc?.();
    const rssBeforeKB = (await rssOfPid('self'))?.rssKB ?? Number.NaN;
    const t0 = performance.now();
    const handle = await watchMounts(core, [mount], {
      backend: spec.backend,
      autoThreshold: spec.autoThreshold,
      catchUp: false,
      backendFactory: factory,
      log: note,
    });
    const returnedAt = performance.now();
    const startMs = returnedAt - t0;
    const watchesAtReturn = await inotifyWatchCount();
    const failed = handle.failed[0] ? `${handle.failed[0].error.code}: ${handle.failed[0].error.message}` : null;
    // Under auto, chokidar out of watches moves to parcel in the background: wait for that.
    const settled = () => {
      const l = latest as { kind: WatchBackendKind; upAt: number | null } | null;
      return failed !== null || (l !== null && l.upAt !== null && (enospc === 0 || l.kind === 'parcel' || spec.backend === 'chokidar'));
    };
    const deadline = performance.now() + 120_000;
    while (!settled() && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const upAt = (latest as { upAt: number | null } | null)?.upAt ?? returnedAt;
    const watchingMs = Math.max(upAt, returnedAt) - t0;
    const rssAfterStartKB = (await rssOfPid('self'))?.rssKB ?? Number.NaN;
    const watchesAtStart = await inotifyWatchCount();
    const backendAtStart = (await handle.stats())[0]?.backend ?? null;

    // Coverage probe: after a pause (a late problem would show by then), change every directory.
    await new Promise((r) => setTimeout(r, 500));
    const probe = { dirs: spec.probe.length, created: 0, modified: 0 };
    if (!failed) {
      const root = mount.rootPath as string;
      const stamp = Date.now();
      const created = spec.probe.map((p) => (p.dir ? `${p.dir}/probe-${stamp}.txt` : `probe-${stamp}.txt`));
      for (const p of created) await writeFile(join(root, p), 'probe');
      for (const p of spec.probe) await writeFile(join(root, p.file), `probe ${stamp}`);
      const deadline = performance.now() + PROBE_WAIT_MS;
      const count = () => ({ created: created.filter((p) => seen.has(p)).length, modified: spec.probe.filter((p) => seen.has(p.file)).length });
      while (performance.now() < deadline) {
        const c = count();
        if (c.created === created.length && c.modified === spec.probe.length) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      Object.assign(probe, count());
    }
    const stats = (await handle.stats())[0];
    const watchesAtEnd = await inotifyWatchCount();
    const peakKB = (await rssOfPid('self'))?.peakKB ?? Number.NaN;
    const c0 = performance.now();
    await handle.close();
    const closeMs = performance.now() - c0;
    const result: Omit<StartupResult, 'processMs'> = {
      label: spec.label,
      startMs,
      watchingMs,
      watchesAtReturn,
      backendAtStart,
      backendAtEnd: stats?.backend ?? null,
      failed,
      watchesAtStart,
      watchesAtEnd,
      rssBeforeKB,
      rssAfterStartKB,
      peakKB,
      problems: stats?.problems ?? 0,
      enospc,
      log,
      probe,
      closeMs,
    };
    process.stdout.write(`${RESULT_MARKER}${JSON.stringify(result)}\n`);
  } finally {
    await core.close().catch(() => undefined);
  }
}

/**
 * The peer: `inotifywait -m -r` on the same tree, timed from spawn to "Watches established.",
 * its watches and RSS read from /proc, then the same coverage probe.
 */
export async function measureInotifywaitStartup(
  root: string,
  probeSpec: Array<{ dir: string; file: string }>,
  user: { uid?: number; gid?: number },
): Promise<PeerStartupResult> {
  const label = 'inotifywait -m -r';
  let monitor: InotifyMonitor;
  try {
    monitor = await InotifyMonitor.start(root, { recursive: true, events: ['create', 'modify', 'close_write', 'moved_to', 'delete'], uid: user.uid, gid: user.gid });
  } catch (err) {
    return { label, startMs: Number.NaN, watches: null, rssKB: null, failed: (err as Error).message, probe: { dirs: probeSpec.length, created: 0, modified: 0 } };
  }
  try {
    const watches = await inotifyWatchesOfPid(monitor.pid);
    const rssKB = (await rssOfPid(monitor.pid))?.rssKB ?? null;
    const seen = new Set<string>();
    monitor.onLine((l) => seen.add(l.path));
    const stamp = Date.now();
    const created = probeSpec.map((p) => join(root, p.dir, `probe-peer-${stamp}.txt`));
    const modified = probeSpec.map((p) => join(root, p.file));
    for (const p of created) await writeFile(p, 'probe');
    for (const p of modified) await writeFile(p, `probe ${stamp}`);
    const deadline = performance.now() + PROBE_WAIT_MS;
    const count = () => ({ created: created.filter((p) => seen.has(p)).length, modified: modified.filter((p) => seen.has(p)).length });
    while (performance.now() < deadline && (count().created < created.length || count().modified < modified.length)) await new Promise((r) => setTimeout(r, 100));
    const stderr = monitor.stderr();
    return { label, startMs: monitor.startMs, watches, rssKB, failed: /upper limit|Failed to watch/i.test(stderr) ? stderr.trim().slice(0, 300) : null, probe: { dirs: probeSpec.length, ...count() } };
  } finally {
    await monitor.stop();
  }
}

export interface StartupPlan {
  pool: Pool;
  databaseUrl: string;
  /** bench/drift.ts, which turns into the watcher child with WATCH_CHILD_FLAG. */
  script: string;
  tempDir: string;
  shape: TreeShape;
  /** parcel, chokidar, auto, auto-grown (auto with the chooser's threshold above the tree). */
  backends: string[];
  asRoot: boolean;
  /** The mount registered here is added (the caller removes it). */
  mountIds: string[];
  progress: (line: string) => void;
}

/** Part 3: makes the tree (owned by `nobody` when we are root), registers it as a mount, measures the peer, then each backend. */
export async function startupPart(o: StartupPlan): Promise<StartupPart> {
  const root = join(o.tempDir, 'big');
  const t0 = performance.now();
  o.progress(`start-up: creating ${o.shape.dirs} × ${o.shape.filesPerDir} empty files…`);
  const tree = await createLeanTree(root, o.shape);
  const user = o.asRoot ? NOBODY : {};
  if (o.asRoot) {
    await openUp([o.tempDir]);
    await run('chown', ['-R', `${NOBODY.uid}:${NOBODY.gid}`, root]);
  }
  const createMs = performance.now() - t0;
  const mount = await createMount(o.pool, { key: `drift-big-${randomUUID().slice(0, 8)}`, kind: 'local', rootPath: root, agentId: null });
  o.mountIds.push(mount.id);
  // One directory per entry of the probe, and the last file of each (createLeanTree's names).
  const probe = Array.from({ length: tree.dirs }, (_, d) => {
    const dir = `d${String(d).padStart(3, '0')}`;
    return { dir, file: `${dir}/f${String(o.shape.filesPerDir - 1).padStart(5, '0')}.txt` };
  });
  o.progress('start-up: inotifywait -m -r…');
  const peer = await measureInotifywaitStartup(root, probe, user);
  const runs: StartupResult[] = [];
  for (const b of o.backends) {
    const grown = b === 'auto-grown';
    const spec: WatchChildSpec = {
      label: b,
      databaseUrl: o.databaseUrl,
      mountId: mount.id,
      backend: (grown ? 'auto' : b) as WatchBackendChoice,
      autoThreshold: grown ? tree.fileCount * 10 : undefined,
      probe,
    };
    o.progress(`start-up: ${spec.label}…`);
    runs.push(await measureWatcherStartup(o.script, spec, user));
  }
  return { files: tree.fileCount, dirs: tree.dirs, createMs, user: o.asRoot ? 'user nobody' : 'this user', runs, peer };
}
