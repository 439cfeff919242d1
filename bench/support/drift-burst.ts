/**
 * Part 2 of the drift bench: a burst of new files written by another process into directories
 * the catalogue already holds, timed from the writer's first write until a count query finds
 * every file ACTIVE with its size (polled every 100 ms). The peer, `inotifywait -m -r` on the
 * same directories, is timed from the same instant until it has printed a create line for
 * every file. The agent's own watcher-event counter (its /metrics, polled every 250 ms) and the
 * events it publishes show where the time between the two goes.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import type { Pool } from '../../shared/db/pool.ts';
import type { EventTap } from './drift-agent.ts';
import type { InotifyMonitor } from './drift-inotify.ts';
import { machineBusySince, machineJiffies, processCpuSeconds } from './proc.ts';

export const BURST_DIR = 'burst';

// The monotonic clock in µs (process.hrtime, which V8 CPU profiles use) at performance.now() = 0.
const hrUsAtOrigin = Number(process.hrtime.bigint() / 1000n) - performance.now() * 1000;
export const POLL_MS = 100;

/** Directory and name of file `i` of burst `round`: spread round-robin over `dirs` directories. */
export const burstDirName = (d: number): string => `d${String(d).padStart(2, '0')}`;
export const burstPath = (round: number, i: number, dirs: number): string =>
  `${BURST_DIR}/${burstDirName(i % dirs)}/r${round}-b-${String(i).padStart(5, '0')}.dat`;
/** 100 B – 4 KB, from the index (the count query recomputes it from the name). */
export const burstSize = (i: number): number => 100 + ((i * 7919) % 4000);

export interface BurstPlan {
  pool: Pool;
  tap: EventTap;
  monitor: InotifyMonitor;
  mountId: string;
  root: string;
  files: number;
  dirs: number;
  /** Bursts of one bench run write different names (each burst is new files). */
  round: number;
  agentPid: number;
  /** The agent's /metrics, polled for its watcher's event counter (filestore_watcher_events_total). */
  metricsUrl: string;
  mountKey: string;
  timeoutMs?: number | undefined;
  progress: (line: string) => void;
}

export interface BurstResult {
  files: number;
  dirs: number;
  /** The writer's first to last write. */
  writeMs: number;
  /** From the first write until the count query saw every file ACTIVE with its size; NaN if it never did. */
  convergedMs: number;
  /** Files found at the end (== files when it converged). */
  catalogued: number;
  /** Catalogue progress: when 1, 25, 50, 90 % of the files were ACTIVE with their size. */
  milestones: Array<{ share: number; ms: number }>;
  /** From the first write: the first drift.detected and node.reconciled events of burst paths received here, and the last reconciled one. */
  firstDriftMs: number;
  firstReconciledMs: number;
  lastReconciledMs: number;
  reconciledEvents: number;
  driftEvents: number;
  /** Reconcile jobs the burst produced (rows of the mount created since the burst started). */
  jobs: number;
  /** Their running time summed (started → finished), and when the last one finished, from the first write. */
  jobsRunMs: number;
  lastJobDoneMs: number;
  /** The burst on the monotonic clock (µs, as V8 CPU profiles count): first write to convergence. */
  window: { startUs: number; endUs: number };
  /** The agent's watcher: when its create counter had moved by 1 % and by every file (polled every 250 ms); NaN if never. */
  watcherFirstMs: number;
  watcherAllMs: number;
  watcherCreates: number;
  /** inotifywait: when it had printed a create line for every file; NaN if it never did. */
  peerMs: number;
  peerSeen: number;
  machineBusy: number;
  agentCpuSeconds: number;
}

/** Writes the files from another node process (as any outside writer would); resolves with its first and last write on our clock. */
function writeBurst(root: string, files: number, dirs: number, round: number): Promise<{ startAt: number; endAt: number }> {
  const script = `
    const fs = require('node:fs'), path = require('node:path');
    const [root, files, dirs, round] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), process.argv[4]];
    const name = (i) => 'burst/d' + String(i % dirs).padStart(2, '0') + '/r' + round + '-b-' + String(i).padStart(5, '0') + '.dat';
    const now = () => performance.timeOrigin + performance.now();
    const start = now();
    for (let i = 0; i < files; i++) fs.writeFileSync(path.join(root, name(i)), Buffer.alloc(100 + ((i * 7919) % 4000), 0x63));
    process.stdout.write(JSON.stringify({ start, end: now() }));`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, root, String(files), String(dirs), String(round)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`burst writer exited with ${code}`));
      const { start, end } = JSON.parse(out) as { start: number; end: number };
      // Epoch milliseconds of the child → this process's performance.now() clock.
      resolve({ startAt: start - performance.timeOrigin, endAt: end - performance.timeOrigin });
    });
  });
}

export async function measureBurst(p: BurstPlan): Promise<BurstResult> {
  const timeoutMs = p.timeoutMs ?? 120_000;
  const expected = new Set(Array.from({ length: p.files }, (_, i) => `${p.root}/${burstPath(p.round, i, p.dirs)}`));
  let peerSeen = 0;
  let peerAt = Number.NaN;
  const offLines = p.monitor.onLine((l) => {
    if (l.events.includes('CREATE') && expected.delete(l.path)) {
      peerSeen++;
      if (peerSeen === p.files) peerAt = l.at;
    }
  });
  const ev = { firstDrift: Number.NaN, firstReconciled: Number.NaN, lastReconciled: Number.NaN, reconciled: 0, drift: 0 };
  const prefix = `${BURST_DIR}/`;
  const offEvents = p.tap.on((e) => {
    const path = e.type === 'filestore.node.reconciled' ? (e.data.node as { path?: string } | undefined)?.path : (e.data.path as string | undefined);
    if (typeof path !== 'string' || !path.startsWith(prefix)) return;
    if (e.type === 'filestore.drift.detected') {
      ev.drift++;
      if (!Number.isFinite(ev.firstDrift)) ev.firstDrift = e.at;
    } else if (e.type === 'filestore.node.reconciled') {
      ev.reconciled++;
      if (!Number.isFinite(ev.firstReconciled)) ev.firstReconciled = e.at;
      ev.lastReconciled = e.at;
    }
  });
  const { rows: jobRows } = await p.pool.query<{ id: number }>(`SELECT coalesce(max(id), 0) AS id FROM filestore.reconciliation_jobs WHERE mount_id = $1`, [p.mountId]);
  const lastJobBefore = jobRows[0]?.id ?? 0;

  const countSql = `
    SELECT count(*)::int AS n FROM filestore.nodes
     WHERE mount_id = $1 AND deleted_at IS NULL AND kind = 'file' AND consistency_state = 'ACTIVE'
       AND path >= $2 AND path < $3
       AND size_bytes = 100 + (substring(name FROM $4)::int * 7919) % 4000`;
  const namePattern = `^r${p.round}-b-([0-9]+)\\.dat$`;
  const unpublished = async () =>
    (await p.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.outbox WHERE mount_id = $1 AND published_at IS NULL`, [p.mountId])).rows[0]?.n ?? 0;
  const count = async () => (await p.pool.query<{ n: number }>(countSql, [p.mountId, prefix, `${BURST_DIR}0`, namePattern])).rows[0]?.n ?? 0;

  // The agent's watcher, seen through its own counter: when it had reported the creates.
  const creates = async () => {
    const text = await (await fetch(p.metricsUrl)).text();
    const line = text.split('\n').find((l) => l.startsWith('filestore_watcher_events_total{') && l.includes(`mount="${p.mountKey}"`) && l.includes('event="create"'));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
  };
  const creates0 = await creates();
  const watcher = { first: Number.NaN, all: Number.NaN, seen: 0 };
  let polling = true;
  const metricsLoop = (async () => {
    while (polling) {
      const n = (await creates().catch(() => creates0)) - creates0;
      const at = performance.now();
      watcher.seen = n;
      if (n >= Math.ceil(0.01 * p.files) && !Number.isFinite(watcher.first)) watcher.first = at;
      if (n >= p.files && !Number.isFinite(watcher.all)) watcher.all = at;
      if (Number.isFinite(watcher.all)) break;
      await new Promise((r) => setTimeout(r, 250));
    }
  })();

  const j0 = machineJiffies();
  const cpu0 = processCpuSeconds(p.agentPid);
  const writing = writeBurst(p.root, p.files, p.dirs, p.round);
  const shares = [0.01, 0.25, 0.5, 0.9];
  const reachedAt: number[] = shares.map(() => Number.NaN);
  let convergedAt = Number.NaN;
  let catalogued = 0;
  const deadline = performance.now() + timeoutMs;
  let written: { startAt: number; endAt: number } | null = null;
  void writing.then((w) => (written = w)).catch(() => {});
  while (performance.now() < deadline) {
    catalogued = await count();
    const at = performance.now();
    shares.forEach((s, k) => {
      if (catalogued >= Math.ceil(s * p.files) && !Number.isFinite(reachedAt[k] as number)) reachedAt[k] = at;
    });
    if (catalogued === p.files) {
      convergedAt = at;
      break;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  const w = written ?? (await writing);
  // The peer may still be printing, and the relay publishing the burst's events: wait for
  // both (the rest of the timeout at most) so the event timeline below is complete.
  while (peerSeen < p.files && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  while (performance.now() < deadline && (await unpublished()) > 0) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 200)); // what was published is delivered by now
  polling = false;
  await metricsLoop;
  offLines();
  offEvents();
  const machineBusy = machineBusySince(j0);
  const agentCpuSeconds = processCpuSeconds(p.agentPid) - cpu0;
  // Job timings on the database clock, placed on ours by the offset of now() at this moment.
  const { rows } = await p.pool.query<{ n: number; run_ms: number | null; last_done_ago_ms: number | null }>(
    `SELECT count(*)::int AS n,
            sum(extract(epoch FROM finished_at - started_at) * 1000)::float8 AS run_ms,
            extract(epoch FROM now() - max(finished_at))::float8 * 1000 AS last_done_ago_ms
       FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND id > $2`,
    [p.mountId, lastJobBefore],
  );
  const queriedAt = performance.now();
  const since = (t: number) => t - w.startAt;
  if (process.env.BENCH_DRIFT_JOBS === '1') await printJobs(p, lastJobBefore, (agoMs) => since(queriedAt - agoMs));
  const usAt = (t: number) => Math.round(hrUsAtOrigin + t * 1000);
  return {
    files: p.files,
    dirs: p.dirs,
    writeMs: w.endAt - w.startAt,
    convergedMs: since(convergedAt),
    catalogued,
    milestones: shares.map((share, k) => ({ share, ms: since(reachedAt[k] as number) })),
    firstDriftMs: since(ev.firstDrift),
    firstReconciledMs: since(ev.firstReconciled),
    lastReconciledMs: since(ev.lastReconciled),
    reconciledEvents: ev.reconciled,
    driftEvents: ev.drift,
    jobs: rows[0]?.n ?? 0,
    jobsRunMs: rows[0]?.run_ms ?? Number.NaN,
    lastJobDoneMs: since(queriedAt - (rows[0]?.last_done_ago_ms ?? Number.NaN)),
    window: { startUs: usAt(w.startAt), endUs: usAt(Number.isFinite(convergedAt) ? convergedAt : performance.now()) },
    watcherFirstMs: since(watcher.first),
    watcherAllMs: since(watcher.all),
    watcherCreates: watcher.seen,
    peerMs: since(peerAt),
    peerSeen,
    machineBusy,
    agentCpuSeconds,
  };
}

/** BENCH_DRIFT_JOBS=1: each reconcile job of the burst, its times in seconds from the first write. */
async function printJobs(p: BurstPlan, afterId: number, at: (agoMs: number) => number): Promise<void> {
  const { rows } = await p.pool.query<{ id: number; path: string; options: Record<string, unknown>; status: string; result: Record<string, number> | null; created: number; started: number | null; finished: number | null }>(
    `SELECT id, path, options, status, result,
            extract(epoch FROM now() - created_at)::float8 * 1000 AS created,
            extract(epoch FROM now() - started_at)::float8 * 1000 AS started,
            extract(epoch FROM now() - finished_at)::float8 * 1000 AS finished
       FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND id > $2 ORDER BY id`,
    [p.mountId, afterId],
  );
  const s = (ago: number | null) => (ago === null ? '-' : (at(ago) / 1000).toFixed(2));
  for (const j of rows) {
    const r = j.result ?? {};
    p.progress(
      `job ${j.id} ${JSON.stringify(j.path)}${j.options.recursive ? ' (recursive)' : ''}${j.options.followUp ? ` follow-up ${String(j.options.followUp)}` : ''}: ` +
        `queued ${s(j.created)} started ${s(j.started)} done ${s(j.finished)} ${j.status}; checked ${r.checked ?? '-'}, discovered ${r.discovered ?? '-'}, unchanged ${r.unchanged ?? '-'}, deferred ${r.deferred ?? '-'}`,
    );
  }
}
