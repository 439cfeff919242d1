/** What bench/drift.ts prints once every part has run: each part in detail, then the summary with targets. */
import type { BurstResult } from './drift-burst.ts';
import type { LatencyResult, Percentiles } from './drift-latency.ts';
import type { PeerStartupResult, StartupResult } from './drift-startup.ts';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { summariseCpuProfile } from './cpu-profile.ts';
import { fmt, formatTable } from './measure.ts';

export interface LatencyRun {
  /** FILESTORE_WATCH_DEBOUNCE_MS; `isDefault`: left unset (the agent's default). */
  debounceMs: number;
  isDefault: boolean;
  /** The backend the agent chose for the mount (from its log). */
  backend: string;
  agentStartMs: number;
  result: LatencyResult;
}

export interface StartupPart {
  files: number;
  dirs: number;
  createMs: number;
  user: string;
  runs: StartupResult[];
  peer: PeerStartupResult | null;
}

export interface BurstRun {
  backend: string;
  debounceMs: number;
  result: BurstResult;
  /** The directory of the agent's CPU profiles of that run (BENCH_CPU_PROF), if any. */
  profile?: string | undefined;
}

export interface DriftReport {
  latency: LatencyRun[];
  bursts: BurstRun[];
  startup: StartupPart | null;
}

export const TARGET_P99_MS = 1_000;
export const TARGET_BURST_MS = 5_000;

const ms = (v: number) => fmt(v, 0);
const s = (v: number) => fmt(v / 1000, 2);
const mb = (kb: number | null) => (kb === null || !Number.isFinite(kb) ? 'n/a' : fmt((kb * 1024) / 1e6, 1));
const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${fmt(a / b, a / b >= 100 ? 0 : 2)}×` : '—');
const verdict = (ok: boolean) => (ok ? 'pass' : 'FAIL');
const pct = (p: Percentiles) => `${ms(p.p50)} / ${ms(p.p99)}`;
const count = (n: number | null) => (n === null ? 'n/a' : n.toLocaleString('en-US'));
const thousands = (n: number) => (n >= 1000 ? `${fmt(n / 1000, n % 1000 === 0 ? 0 : 1)}k` : String(n));

export function printReport(r: DriftReport): void {
  const summary: string[][] = [];

  if (r.latency.length > 0) {
    const first = r.latency[0] as LatencyRun;
    console.log(
      `\n1. Out-of-band write → filestore.node.reconciled: ${first.result.changes} single-file rewrites per run (after ${first.result.warmup} unmeasured), ` +
        'one at a time — the next starts once the event and inotifywait\'s line for the previous one arrived. Peer: inotifywait -m on the same directory, same changes.',
    );
    console.log(
      formatTable(
        [
          'debounce',
          'backend',
          'to inotifywait line p50 / p99 ms',
          'to drift.detected p50 / p99',
          '… written / in outbox p50 / p99',
          'drift.detected → reconciled p50 / p99',
          'to node.reconciled p50 / p90 / p99 / max',
          'timeouts',
          'machine CPU busy',
          'agent CPU ms/change',
        ],
        r.latency.map((l) => [
          `${l.debounceMs} ms${l.isDefault ? ' (default)' : ''}`,
          l.backend,
          pct(l.result.inotify),
          pct(l.result.drift),
          `${pct(l.result.driftWritten)} · ${pct(l.result.driftInOutbox)}`,
          pct(l.result.afterDrift),
          `${ms(l.result.reconciled.p50)} / ${ms(l.result.reconciled.p90)} / ${ms(l.result.reconciled.p99)} / ${ms(l.result.reconciled.max)}`,
          `${l.result.timeouts.reconciled} / ${l.result.timeouts.inotify}`,
          `${fmt(l.result.machineBusy * 100, 0)} %`,
          fmt(l.result.agentCpuSecondsPerChange * 1000, 1),
        ]),
      ),
    );
    console.log(
      '   "… written / in outbox": the drift.detected part split at the event\'s occurredAt (the drift sink\'s transaction): write → written (watcher, debounce, sink), ' +
        'written → received (waiting for the outbox relay). Timeouts: changes whose reconciled event / inotifywait line did not come within 10 s (counted as 10 s).',
    );
    console.log(`   agent start-up (spawn → "filestore agent … at …", watchers up): ${r.latency.map((l) => `${s(l.agentStartMs)} s`).join(', ')}`);
    for (const l of r.latency) {
      const e = l.result.eventLoop;
      console.log(
        `   ${l.backend}, ${l.debounceMs} ms: agent event-loop delay over the run p99 ${ms(e.p99)} ms, max ${ms(e.max)} ms, mean ${fmt(e.mean, 1)} ms; ` +
          `slowest changes (ms [to drift.detected, of which in outbox] @ s into the run): ${l.result.slowest.map((x) => `${ms(x.ms)} [${ms(x.driftMs)}, ${ms(x.inOutboxMs)}] @${fmt(x.atS, 0)}`).join(', ')}`,
      );
    }
    for (const l of r.latency) {
      const tag = `${l.backend}, ${l.debounceMs} ms${l.isDefault ? ' (default)' : ''}`;
      const main = l === first;
      summary.push(
        [`write → node.reconciled p50 ms (${tag})`, ms(l.result.reconciled.p50), ms(l.result.inotify.p50), ratio(l.result.reconciled.p50, l.result.inotify.p50), '—', '—'],
        [
          `write → node.reconciled p99 ms (${tag})`,
          ms(l.result.reconciled.p99),
          ms(l.result.inotify.p99),
          ratio(l.result.reconciled.p99, l.result.inotify.p99),
          main ? `< ${fmt(TARGET_P99_MS, 0)} ms` : `(< ${fmt(TARGET_P99_MS, 0)} ms)`,
          main ? verdict(l.result.reconciled.p99 < TARGET_P99_MS) : l.result.reconciled.p99 < TARGET_P99_MS ? '(pass)' : '(fail)',
        ],
      );
    }
  }

  if (r.bursts.length > 0) {
    const b0 = (r.bursts[0] as BurstRun).result;
    console.log(
      `\n2. Burst: ${count(b0.files)} new files (100 B – 4 KB) written by another process into ${b0.dirs} catalogued directories; the catalogue ` +
        'polled every 100 ms with a count of ACTIVE files of the right size, the agent\'s watcher-event counter (/metrics) every 250 ms. ' +
        'Seconds from the first write. Peer: inotifywait -m -r on the same directories, until it printed every create.',
    );
    console.log(
      formatTable(
        ['agent', 'writer done', 'inotifywait: all creates', 'agent watcher: 1 % / all creates', 'first drift.detected', 'first node.reconciled', 'catalogue 25 / 50 / 90 %', 'catalogue 100 %', 'last node.reconciled', 'jobs (run s, last done)', 'agent CPU s', 'machine CPU busy'],
        r.bursts.map(({ backend, debounceMs, result: b }) => [
          `${backend}, ${debounceMs} ms`,
          s(b.writeMs),
          `${s(b.peerMs)}${b.peerSeen < b.files ? ` (${count(b.peerSeen)} seen)` : ''}`,
          `${s(b.watcherFirstMs)} / ${s(b.watcherAllMs)}${b.watcherCreates < b.files ? ` (${count(b.watcherCreates)} seen)` : ''}`,
          s(b.firstDriftMs),
          s(b.firstReconciledMs),
          b.milestones.filter((m) => m.share >= 0.25).map((m) => s(m.ms)).join(' / '),
          Number.isFinite(b.convergedMs) ? s(b.convergedMs) : `not converged (${count(b.catalogued)})`,
          s(b.lastReconciledMs),
          `${b.jobs} (${s(b.jobsRunMs)}, ${s(b.lastJobDoneMs)})`,
          fmt(b.agentCpuSeconds, 2),
          `${fmt(b.machineBusy * 100, 0)} %`,
        ]),
      ),
    );
    console.log(`   events received: ${r.bursts.map(({ backend, result: b }) => `${backend}: ${count(b.driftEvents)} drift.detected, ${count(b.reconciledEvents)} node.reconciled`).join('; ')}`);
    r.bursts.forEach(({ backend, debounceMs, result: b }, i) => {
      const main = i === 0;
      const ok = Number.isFinite(b.convergedMs) && b.convergedMs < TARGET_BURST_MS;
      summary.push([
        `${thousands(b.files)}-file burst → all ACTIVE, s (${backend}, ${debounceMs} ms)`,
        s(b.convergedMs),
        s(b.peerMs),
        ratio(b.convergedMs, b.peerMs),
        main ? `< ${fmt(TARGET_BURST_MS / 1000, 0)} s` : `(< ${fmt(TARGET_BURST_MS / 1000, 0)} s)`,
        main ? verdict(ok) : ok ? '(pass)' : '(fail)',
      ]);
    });
  }

  if (r.startup) {
    const u = r.startup;
    const k = thousands(u.files);
    console.log(
      `\n3. Watcher start-up on a ${k}-file mount (${count(u.dirs)} directories × ${count(u.files / u.dirs)} empty files, made in ${s(u.createMs)} s), ` +
        `each backend in its own child process running watchMounts (catch-up rescan off), as ${u.user}. ` +
        '"watchMounts returned": the call the agent makes at start; "watching": until the backend that stays is up (later, when the watcher moved ' +
        'to parcel in the background). Coverage: then a new file in every directory and a rewrite of one file per directory; how many the watcher reported within 5 s.',
    );
    const rows = u.runs.map((x) => [
      x.label,
      s(x.startMs),
      s(x.watchingMs),
      x.backendAtStart === x.backendAtEnd ? String(x.backendAtStart) : `${x.backendAtStart} → ${x.backendAtEnd}`,
      `${count(x.watchesAtReturn)} / ${count(x.watchesAtStart)} / ${count(x.watchesAtEnd)}`,
      `${mb(x.rssBeforeKB)} → ${mb(x.rssAfterStartKB)} (+${mb(x.rssAfterStartKB - x.rssBeforeKB)})`,
      mb(x.peakKB),
      `${count(x.enospc)} / ${count(x.problems)}`,
      `${x.probe.created} / ${x.probe.modified} of ${x.probe.dirs}`,
      x.failed ?? '—',
    ]);
    if (u.peer) {
      const p = u.peer;
      rows.push([p.label, s(p.startMs), s(p.startMs), '—', count(p.watches), `${mb(p.rssKB)}`, '—', p.failed ? 'limit reached' : '0', `${p.probe.created} / ${p.probe.modified} of ${p.probe.dirs}`, p.failed ?? '—']);
    }
    console.log(
      formatTable(
        ['watcher', 'watchMounts returned s', 'watching s', 'backend', 'inotify watches (returned / watching / end)', 'RSS MB before → watching', 'peak RSS MB', 'ENOSPC lines / problems', 'coverage new / rewritten', 'failed'],
        rows,
      ),
    );
    if (u.runs.some((x) => x.label === 'auto-grown')) {
      console.log("   auto-grown: auto with the chooser's threshold above the tree, as if it had counted the mount while it was small: chokidar starts on it.");
    }
    for (const x of u.runs) {
      if (x.log.length === 0) continue;
      const more = x.enospc > 2 ? `\n     … and ${count(x.enospc - 2)} more ENOSPC lines like these (one per file chokidar could not watch)` : '';
      console.log(`   ${x.label} said:\n     ${x.log.map((l) => l.slice(0, 200)).join('\n     ')}${more}`);
    }
    const peer = u.peer;
    for (const x of u.runs) {
      const isAuto = x.label === 'auto';
      summary.push(
        [`${k}-file mount, ${x.label}: start-up s (until watching)`, s(x.watchingMs), peer ? s(peer.startMs) : '—', ratio(x.watchingMs, peer?.startMs ?? Number.NaN), '—', '—'],
        [`${k}-file mount, ${x.label}: inotify watches`, count(x.watchesAtEnd), count(peer?.watches ?? null), ratio(x.watchesAtEnd ?? Number.NaN, peer?.watches ?? Number.NaN), '—', '—'],
        [`${k}-file mount, ${x.label}: RSS MB watching (Δ)`, `${mb(x.rssAfterStartKB)} (+${mb(x.rssAfterStartKB - x.rssBeforeKB)})`, mb(peer?.rssKB ?? null), ratio(x.rssAfterStartKB, peer?.rssKB ?? Number.NaN), '—', '—'],
      );
      const clean = x.enospc === 0 && x.failed === null && x.probe.created === x.probe.dirs && x.probe.modified === x.probe.dirs;
      summary.push([
        `${k}-file mount, ${x.label}: watched, no ENOSPC${isAuto ? ' (the agent\'s default)' : ''}`,
        `${x.enospc === 0 ? 'no ENOSPC' : `${count(x.enospc)} ENOSPC`}, ${x.probe.created}/${x.probe.dirs} dirs seen`,
        peer ? `${peer.failed ? 'limit reached' : 'no ENOSPC'}, ${peer.probe.created}/${peer.probe.dirs}` : '—',
        '—',
        isAuto ? 'no ENOSPC' : '(no ENOSPC)',
        isAuto ? verdict(clean) : clean ? '(pass)' : '(fail)',
      ]);
    }
  }

  console.log('\nSummary (peer: inotifywait from inotify-tools, same machine, same run; ratio = filestore ÷ peer; targets in brackets are informational)');
  console.log(formatTable(['metric', 'filestore', 'peer', 'ratio', 'target', 'pass/fail'], summary));
  console.log('RSS in MB = 10^6 bytes (VmRSS / VmHWM from /proc). Latencies are measured in the bench process from just before the write to the arrival of the Redis message or the inotifywait line.');
}

/** Where the agent's CPU went during each burst (BENCH_CPU_PROF): self time by place and by function, inclusive time. */
export async function printBurstProfiles(bursts: BurstRun[], repoRoot: string): Promise<void> {
  for (const b of bursts) {
    if (!b.profile) continue;
    // CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile: thread 0 is the main thread.
    const name = (await readdir(b.profile).catch(() => [] as string[])).find((f) => /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(f));
    if (!name) {
      console.log(`\nNo main-thread CPU profile of the agent in ${b.profile}`);
      continue;
    }
    const file = join(b.profile, name);
    const sum = await summariseCpuProfile(file, repoRoot, [b.result.window], 14);
    const wall = (b.result.window.endUs - b.result.window.startUs) / 1000;
    console.log(`\nAgent CPU profile during the burst, ${b.backend}: ${fmt(sum.busyMs, 0)} ms of JavaScript/GC busy in ${fmt(wall, 0)} ms (${file})`);
    const rows = (top: Array<[string, number]>) => top.map(([name, ms]) => [name.slice(0, 110), fmt(ms, 0), `${fmt((ms / sum.busyMs) * 100, 1)} %`]);
    console.log(formatTable(['self time by place', 'ms', 'share of busy'], rows(sum.byPlace)));
    console.log(formatTable(['self time by function', 'ms', 'share of busy'], rows(sum.selfTop)));
    console.log(formatTable(['inclusive time by function', 'ms', 'share of busy'], rows(sum.inclusiveTop)));
  }
}
