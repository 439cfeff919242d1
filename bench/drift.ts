/**
 * Drift benchmark (issue 5): how fast changes made around Filestore reach the catalogue
 * through a real agent's watchers, next to raw inotify (`inotifywait`, Debian's inotify-tools)
 * on the same machine in the same run.
 *
 *   1. Latency: an out-of-band rewrite of one catalogued file (plain fs, outside Filestore) to
 *      the agent's `filestore.node.reconciled` event for it, received from Redis
 *      (`filestore:events`) here — p50 and p99 over 1,000 single-file changes, one at a time,
 *      with the default debounce (FILESTORE_WATCH_DEBOUNCE_MS unset: 200 ms), again at 50 ms, and
 *      with FILESTORE_WATCH_BACKEND=chokidar (auto picks parcel for these small trees; dirs for the 200,000-file start-up tree).
 *      Peer: `inotifywait -m` on the same directory, write to its stdout line, same changes.
 *   2. Burst: 10,000 new files written by another process, from the first write until a count
 *      query finds all of them ACTIVE with their sizes. Peer: until inotifywait -m -r printed
 *      all 10,000 creates. Run with the default configuration, then with chokidar.
 *   3. Start-up on a 200k-file mount, per watcher backend (parcel, chokidar, auto, and auto
 *      given a chokidar threshold the tree has outgrown — `auto-grown`): start-up time, RSS,
 *      inotify watches, ENOSPC, coverage. Peer: inotifywait -r on the same tree.
 *
 * Parts 1 and 2 run `node dist/filestore.js agent` (FILESTORE_ENABLE_WATCHERS=true,
 * backend auto) on a local mount it owns; part 3 runs the agent's watchMounts in child
 * processes, as an unprivileged user when the bench runs as root (the inotify watch budget is
 * per user: a chokidar child that exhausts it must not starve other root processes).
 *
 *   npm run bench:drift                 (full size: about 20 minutes)
 *   npm run bench:drift -- --quick      (100 changes, 1,000-file burst, 20k-file mount: a smoke run)
 *
 * Environment: BENCH_DRIFT_CHANGES (1000), BENCH_DRIFT_WARMUP (20), BENCH_DRIFT_BURST (10000),
 * BENCH_DRIFT_TREE_FILES (200000, in directories of 1,000), BENCH_DRIFT_DEBOUNCES (200,50 —
 * 200 runs the agent's default, any other value sets FILESTORE_WATCH_DEBOUNCE_MS),
 * BENCH_DRIFT_FORCED (chokidar, parcel or dirs; --quick: none — one more agent run with FILESTORE_WATCH_BACKEND
 * set to it; `none` skips it), BENCH_DRIFT_ONLY=burst with BENCH_DRIFT_FORCED=none: the burst
 * of the default configuration alone (about 30 s),
 * BENCH_DRIFT_BACKENDS (parcel,chokidar,auto,auto-grown; --quick: no auto-grown), BENCH_DRIFT_ONLY (parts to run, of
 * latency,burst,startup), BENCH_DRIFT_JOBS=1 (each reconcile job of a burst: path, times, counts), BENCH_DRIFT_DATABASE_URL
 * (postgres://postgres@127.0.0.1:5432/filestore_bench_drift), BENCH_DRIFT_REDIS_URL
 * (redis://127.0.0.1:6379/11: a Redis database no other process uses, see drift-setup.ts),
 * BENCH_CPU_PROF (a directory: the agents run with --cpu-prof, and where their CPU went during
 * each burst is printed — figures of a profiled run are slower), TMPDIR (where the trees go).
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { createMount } from '../shared/catalogue/mounts.ts';
import { ensureDatabase } from '../shared/db/ensure-database.ts';
import { migrate } from '../shared/db/migrate.ts';
import { createPool } from '../shared/db/pool.ts';
import { vacuumCatalogue } from './support/audit-job.ts';
import { EventTap, spawnAgent, type AgentRun } from './support/drift-agent.ts';
import { BURST_DIR, measureBurst } from './support/drift-burst.ts';
import { benchChildren, ensureInotifyTools, inotifyLimits, InotifyMonitor, inotifyWatchesOfUser } from './support/drift-inotify.ts';
import { measureLatency } from './support/drift-latency.ts';
import { printBurstProfiles, printReport, type DriftReport } from './support/drift-report.ts';
import { checkRedisIsOurs, cleanUp, createDriftTree, LATENCY_DIR, latencyPath, waitForQuiet } from './support/drift-setup.ts';
import { runWatchChild, startupPart, WATCH_CHILD_FLAG } from './support/drift-startup.ts';
import { machineFacts } from './support/machine.ts';
import { envInt, fmt } from './support/measure.ts';

const DEFAULT_DEBOUNCE_MS = 200;

if (process.argv[2] === WATCH_CHILD_FLAG) {
  await runWatchChild(process.argv.slice(3));
} else {
  await main();
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const databaseUrl = process.env.BENCH_DRIFT_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/filestore_bench_drift';
  const redisUrl = process.env.BENCH_DRIFT_REDIS_URL ?? 'redis://127.0.0.1:6379/11';
  const changes = quick ? 100 : envInt('BENCH_DRIFT_CHANGES', 1_000);
  const warmup = quick ? 5 : envInt('BENCH_DRIFT_WARMUP', 20);
  const burstFiles = quick ? 1_000 : envInt('BENCH_DRIFT_BURST', 10_000);
  const burstDirs = Math.max(1, Math.ceil(burstFiles / 1_000));
  const treeFiles = quick ? 20_000 : envInt('BENCH_DRIFT_TREE_FILES', 200_000);
  const treeShape = { dirs: Math.max(1, Math.ceil(treeFiles / 1_000)), filesPerDir: Math.min(treeFiles, 1_000) };
  const debounces = (process.env.BENCH_DRIFT_DEBOUNCES ?? (quick ? '200' : '200,50')).split(',').map((d) => Number(d.trim()));
  if (debounces.some((d) => !Number.isInteger(d) || d < 0)) throw new Error('BENCH_DRIFT_DEBOUNCES must be a comma-separated list of milliseconds');
  // auto-grown: auto, with the chooser's count taken when the tree was still small (a threshold
  // above the tree), so chokidar starts on it — what happens when a mount outgrows the chooser.
  // Left out of --quick: a quick tree fits the watch budget, so it would repeat `auto`.
  const backends = (process.env.BENCH_DRIFT_BACKENDS ?? (quick ? 'parcel,chokidar,auto' : 'parcel,chokidar,auto,auto-grown')).split(',').map((b) => b.trim());
  // A third agent run with FILESTORE_WATCH_BACKEND forced (latency and burst): what the other backend costs.
  const forcedEnv = (process.env.BENCH_DRIFT_FORCED ?? (quick ? 'none' : 'chokidar')).trim();
  if (!['none', 'chokidar', 'parcel', 'dirs'].includes(forcedEnv)) throw new Error('BENCH_DRIFT_FORCED must be chokidar, parcel, dirs or none');
  const forced = forcedEnv === 'none' ? null : (forcedEnv as 'chokidar' | 'parcel' | 'dirs');
  const only = new Set((process.env.BENCH_DRIFT_ONLY ?? 'latency,burst,startup').split(',').map((p) => p.trim()));
  const cpuProfDir = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
  const script = fileURLToPath(import.meta.url);
  const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));
  const started = performance.now();
  const progress = (line: string) => console.log(`· [${fmt((performance.now() - started) / 1000, 0)} s] ${line}`);

  const inotifyVersion = await ensureInotifyTools(progress);
  await checkRedisIsOurs(redisUrl);
  const tempDir = await mkdtemp(join(os.tmpdir(), 'filestore-bench-drift-'));
  const state = { mountIds: [] as string[], agentIds: [] as string[], agents: new Set<AgentRun>(), monitors: new Set<InotifyMonitor>() };
  const stopAll = async () => {
    await Promise.allSettled([...state.monitors].map((m) => m.stop()));
    await Promise.allSettled([...state.agents].map((a) => a.stop()));
    for (const child of benchChildren) child.kill('SIGKILL');
  };
  // On SIGINT/SIGTERM: stop the children, remove the mounts, queues and trees, exit 130. What
  // main is doing meanwhile fails (its children are gone) and waits for this to end the process.
  let interrupted: Promise<void> | null = null;
  const onSignal = () => {
    if (interrupted) return;
    console.error('interrupted: stopping the agent and inotifywait, removing the bench mounts and trees…');
    interrupted = stopAll()
      .then(() => cleanUp({ databaseUrl, redisUrl, mountIds: state.mountIds, agentIds: state.agentIds }, (l) => console.error(l)))
      .catch((e: Error) => console.error(`cleanup: ${e.message}`))
      .finally(() => {
        rmSync(tempDir, { recursive: true, force: true });
        process.exit(130);
      });
  };
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);

  await ensureDatabase(databaseUrl);
  await migrate(databaseUrl);
  const pool = createPool(databaseUrl, 4);
  let tap: EventTap | null = null;
  const report: DriftReport = { latency: [], bursts: [], startup: null };
  try {
    await vacuumCatalogue(pool);
    const machine = await machineFacts(pool, tempDir, redisUrl);
    const limits = await inotifyLimits();
    const rootWatches = await inotifyWatchesOfUser(process.getuid?.() ?? 0);
    const asRoot = process.getuid?.() === 0;
    machine.push(
      ['inotify limits', `max_user_watches=${limits.maxUserWatches}, max_user_instances=${limits.maxUserInstances}, max_queued_events=${limits.maxQueuedEvents}`],
      ['inotify watches held by this user at start', `${rootWatches.watches} in ${rootWatches.processes} process(es)`],
      ['peer', inotifyVersion],
    );
    console.log('Machine');
    for (const [label, value] of machine) if (label !== 'cp') console.log(`  ${label}: ${value}`);
    console.log(
      `Shape: ${changes} changes (+${warmup} warm-up) per debounce of ${debounces.map((d) => `${d} ms`).join(', ')}; burst of ${burstFiles} files in ${burstDirs} director${burstDirs === 1 ? 'y' : 'ies'}; ` +
        `start-up on ${treeShape.dirs} × ${treeShape.filesPerDir} files with ${backends.join(', ')}; parts: ${[...only].join(', ')}\n`,
    );

    if (only.has('latency') || only.has('burst')) {
      const agentId = `bench-drift-${randomUUID().slice(0, 8)}`;
      const root = join(tempDir, 'mount');
      const latencyFiles = warmup + changes;
      await createDriftTree(root, latencyFiles, burstDirs);
      const mount = await createMount(pool, { key: `drift-${randomUUID().slice(0, 8)}`, kind: 'local', rootPath: root, agentId });
      state.mountIds.push(mount.id);
      state.agentIds.push(agentId);
      tap = await EventTap.open(redisUrl);
      tap.watchMount(mount.id);
      // One agent run per configuration: the default one (debounce and backend as the agent
      // chooses them) carries the targets; the others show what the two knobs change.
      const configs: Array<{ debounceMs: number; forced: 'chokidar' | 'parcel' | 'dirs' | null; latency: boolean; burst: boolean }> = debounces.map((debounceMs, i) => ({
        debounceMs,
        forced: null,
        latency: only.has('latency'),
        burst: only.has('burst') && i === 0,
      }));
      if (forced) configs.push({ debounceMs: DEFAULT_DEBOUNCE_MS, forced, latency: only.has('latency'), burst: only.has('burst') });
      let bursts = 0;
      for (const [round, config] of configs.filter((c) => c.latency || c.burst).entries()) {
        const { debounceMs } = config;
        const isDefault = debounceMs === DEFAULT_DEBOUNCE_MS;
        progress(
          `agent ${agentId}, debounce ${debounceMs} ms${isDefault ? ' (default: FILESTORE_WATCH_DEBOUNCE_MS unset)' : ''}, ` +
            `${config.forced ? `FILESTORE_WATCH_BACKEND=${config.forced}` : 'backend auto'}: starting…`,
        );
        const agent = await spawnAgent({
          repoRoot,
          agentId,
          databaseUrl,
          redisUrl,
          debounceMs: isDefault ? undefined : debounceMs,
          backend: config.forced ?? undefined,
          logFile: join(tempDir, `agent-${round}.log`),
          // One file per thread: the main thread's is the agent's (walker processes are not profiled).
          nodeArgs: cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${join(cpuProfDir, `agent-${round}`)}`] : undefined,
        });
        state.agents.add(agent);
        const chosen = /watcher \S+: (chokidar|parcel|dirs)/.exec(agent.watcherLines[0] ?? '')?.[1] ?? 'unknown';
        const backend = config.forced ? `${chosen} (forced)` : `${chosen} (auto)`;
        const settleMs = await waitForQuiet(pool, mount.id, latencyFiles);
        // As autovacuum would have left a catalogue that has been this size for a while.
        await vacuumCatalogue(pool);
        progress(`agent up in ${fmt(agent.startMs / 1000, 1)} s (${agent.watcherLines[0] ?? 'no watcher line'}); catch-up rescan settled ${fmt(settleMs / 1000, 1)} s later`);
        if (config.latency) {
          const monitor = await InotifyMonitor.start(join(root, LATENCY_DIR), { recursive: false, events: ['modify', 'close_write', 'create', 'moved_to', 'attrib'] });
          state.monitors.add(monitor);
          progress(`latency: ${changes} changes (+${warmup} warm-up), debounce ${debounceMs} ms, ${backend}…`);
          const files = Array.from({ length: latencyFiles }, (_, i) => latencyPath(i));
          const result = await measureLatency({ tap, monitor, mountId: mount.id, root, files, warmup, round, agentPid: agent.pid, metricsUrl: `${agent.url}/metrics`, progress });
          await monitor.stop();
          state.monitors.delete(monitor);
          report.latency.push({ debounceMs, isDefault, backend, agentStartMs: agent.startMs, result });
        }
        if (config.burst) {
          await vacuumCatalogue(pool);
          const monitor = await InotifyMonitor.start(join(root, BURST_DIR), { recursive: true, events: ['create'] });
          state.monitors.add(monitor);
          progress(`burst: ${burstFiles} files from another process, ${backend}…`);
          const result = await measureBurst({
            pool,
            tap,
            monitor,
            mountId: mount.id,
            mountKey: mount.key,
            metricsUrl: `${agent.url}/metrics`,
            root,
            files: burstFiles,
            dirs: burstDirs,
            round: bursts++,
            agentPid: agent.pid,
            progress,
          });
          report.bursts.push({ backend, debounceMs, result, profile: cpuProfDir ? join(cpuProfDir, `agent-${round}`) : undefined });
          await monitor.stop();
          state.monitors.delete(monitor);
          await waitForQuiet(pool, mount.id, latencyFiles);
        }
        const code = await agent.stop();
        state.agents.delete(agent);
        if (code !== 0) progress(`agent exited with ${code} after SIGTERM (expected 0); log: ${agent.logFile}\n${await agent.tail(15)}`);
      }
    }

    if (only.has('startup')) {
      report.startup = await startupPart({ pool, databaseUrl, script, tempDir, shape: treeShape, backends, asRoot, mountIds: state.mountIds, progress });
    }
    progress('all parts done');
    printReport(report);
    if (cpuProfDir) await printBurstProfiles(report.bursts, repoRoot);
  } catch (err) {
    if (interrupted) await new Promise<never>(() => {}); // the signal handler exits
    throw err;
  } finally {
    await stopAll();
    await tap?.close();
    await pool.end();
    if (!interrupted) {
      const t0 = performance.now();
      await rm(tempDir, { recursive: true, force: true });
      console.log(`Cleanup: removed ${tempDir} in ${fmt((performance.now() - t0) / 1000, 1)} s.`);
      await cleanUp({ databaseUrl, redisUrl, mountIds: state.mountIds, agentIds: state.agentIds }, (l) => console.log(l));
      process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    }
  }
}

