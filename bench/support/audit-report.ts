/** What bench/audit.ts prints once every part has run: rounds, detail, SQL, summary, profile. */
import type { AuditResult, ChildAuditResult } from './audit-job.ts';
import type { LocalResult, OurAudit } from './audit-local.ts';
import type { MillionResult } from './audit-million.ts';
import type { PeerRun } from './audit-peers.ts';
import type { S3Result } from './audit-s3.ts';
import { summariseCpuProfile } from './cpu-profile.ts';
import type { StatementTally } from './sql-trace.ts';
import { fmt, formatTable } from './measure.ts';
import { medianRun } from './rounds.ts';

export interface Report {
  local: LocalResult | null;
  s3: S3Result | null;
  big: MillionResult | null;
  invalid: string[];
  profile: string | null;
  repoRoot: string;
}

const TARGET_UNCHANGED = 1.0;
const TARGET_DRIFT = 1.5;
const TARGET_S3 = 1.2;
const TARGET_RSS_MB = 300;

const s = (ms: number) => fmt(ms / 1000, 2);
const mb = (kb: number) => (kb * 1024) / 1e6;
const ratio = (a: number, b: number) => `${fmt(a / b, 2)}×`;
const verdict = (ok: boolean) => (ok ? 'pass' : 'FAIL');
const roundsLine = (runs: Array<{ ms: number }>) => runs.map((r) => s(r.ms)).join(', ');
const perRoundRatios = (ours: Array<{ ms: number }>, peer: Array<{ ms: number }>) =>
  ours.map((o, r) => ratio(o.ms, (peer[r] as { ms: number }).ms)).join(', ');
const isRelay = (t: StatementTally) => t.label.startsWith('relay') || t.label.startsWith('background');
const dbWaitMs = (sql: StatementTally[]) => sql.filter((t) => !isRelay(t)).reduce((n, t) => n + t.ms, 0);
const roundTrips = (sql: StatementTally[]) => sql.filter((t) => !isRelay(t)).reduce((n, t) => n + t.calls, 0);
const relayTrips = (sql: StatementTally[]) => sql.filter(isRelay).reduce((n, t) => n + t.calls, 0);

export async function printReport(r: Report): Promise<void> {
  const summary: string[][] = [];
  const detail: Array<[string, OurAudit]> = [];

  if (r.local) {
    const l = r.local;
    const u = { ours: medianRun(l.unchanged.ours), rclone: medianRun(l.unchanged.rclone), find: medianRun(l.unchanged.find) };
    const d = { ours: medianRun(l.drift.ours), rclone: medianRun(l.drift.rclone), find: medianRun(l.drift.find) };
    console.log(`\n1. Local tree: ${l.files} files (${fmt(l.bytes / 1e6, 0)} MB) in ${l.shape.dirs} directories, written and synced in ${s(l.createMs)} s`);
    console.log(`   initial audit (discovers everything): ${s(l.initial.ms)} s ${JSON.stringify(l.initial.counts)}; its events published by the relay in a further ${s(l.initial.drainMs)} s`);
    console.log('   every round, seconds (ratio = ours ÷ rclone of the same round):');
    console.log(`     unchanged — ours ${roundsLine(l.unchanged.ours)}; rclone ${roundsLine(l.unchanged.rclone)}; find ${roundsLine(l.unchanged.find)}; ratio ${perRoundRatios(l.unchanged.ours, l.unchanged.rclone)}`);
    console.log(`     1 % drift — ours ${roundsLine(l.drift.ours)}; rclone ${roundsLine(l.drift.rclone)}; find ${roundsLine(l.drift.find)}; ratio ${perRoundRatios(l.drift.ours, l.drift.rclone)}`);
    console.log(`     drifts: ${l.drift.drifts.map((x) => `${x.modified} modified / ${x.added} added / ${x.deleted} deleted`).join('; ')}`);
    console.log(`     drift audit counts: ${l.drift.ours.map((o) => JSON.stringify(o.counts)).join('; ')}`);
    detail.push(['local: initial (discovery)', l.initial], ['local: unchanged (median)', u.ours], ['local: 1 % drift (median)', d.ours]);
    summary.push(
      [`local ${l.files / 1000}k: initial audit (discovery) s`, s(l.initial.ms), s(u.rclone.ms), ratio(l.initial.ms, u.rclone.ms), '—', '—'],
      [`local ${l.files / 1000}k: unchanged audit s vs rclone`, s(u.ours.ms), s(u.rclone.ms), ratio(u.ours.ms, u.rclone.ms), `≤ ${fmt(TARGET_UNCHANGED, 1)}× peer`, verdict(u.ours.ms <= TARGET_UNCHANGED * u.rclone.ms)],
      [`local ${l.files / 1000}k: unchanged audit s vs find`, s(u.ours.ms), s(u.find.ms), ratio(u.ours.ms, u.find.ms), '—', '—'],
      [`local ${l.files / 1000}k: 1 % drift audit s vs rclone`, s(d.ours.ms), s(d.rclone.ms), ratio(d.ours.ms, d.rclone.ms), `≤ ${fmt(TARGET_DRIFT, 1)}× peer`, verdict(d.ours.ms <= TARGET_DRIFT * d.rclone.ms)],
      [`local ${l.files / 1000}k: 1 % drift audit s vs find`, s(d.ours.ms), s(d.find.ms), ratio(d.ours.ms, d.find.ms), '—', '—'],
    );
  }

  if (r.big) {
    const b = r.big;
    console.log(`\n2. Lean local tree: ${b.files} empty files in ${b.shape.dirs} directories, created in ${s(b.createMs)} s; each audit in a child process`);
    const line = (name: string, c: ChildAuditResult) =>
      `   ${name}: ${s(c.ms)} s in the handler (${s(c.processMs)} s spawn to exit, relay drain ${s(c.drainMs)} s), RSS ${fmt(mb(c.rssBeforeKB))} MB before, ` +
      `peak ${fmt(mb(c.peakAfterAuditKB))} MB by the audit's end (walker processes ${fmt(mb(c.walkersPeakKB ?? 0))} MB of it; PSS of all of them together at most ${fmt(mb(c.sampledPeakPssKB ?? 0))} MB, sampled), ${fmt(mb(c.peakAtExitKB))} MB at exit; ${JSON.stringify(c.counts)}; WAL ${fmt(c.walBytes / 1e6, 0)} MB`;
    if (b.initial) console.log(line('initial audit (discovery)', b.initial));
    else console.log(`   catalogue seeded (the rows a discovery writes, by insertNodes of the listing; no audit) in ${s(b.seedMs ?? Number.NaN)} s — BENCH_AUDIT_MILLION=discover runs the discovery audit instead`);
    console.log(line('unchanged audit', b.unchanged));
    const m = b.unchanged.memory;
    const mib = (bytes: number) => fmt(bytes / 2 ** 20, 0);
    console.log(
      `   unchanged audit's memory at its progress points (largest seen): RSS ${mib(m.rss)} MiB, V8 heap used ${mib(m.heapUsed)} MiB of ` +
        `${mib(m.heapTotal)} MiB allocated, external ${mib(m.external)} MiB (array buffers ${mib(m.arrayBuffers)} MiB); autoanalyze runs ${b.unchanged.analyzeRuns}`,
    );
    console.log(`\n   SQL statements of the 1M unchanged audit (in its child process)`);
    console.log(
      formatTable(
        ['statement', 'calls', 'wait ms', 'ms/call', 'rows'],
        b.unchanged.sql.slice(0, 10).map((t) => [t.label, String(t.calls), fmt(t.ms, 0), fmt(t.ms / t.calls, 2), String(t.rows)]),
      ).replace(/^/gm, '   '),
    );
    console.log(`   rclone lsjson -R: ${s(b.rclone.ms)} s, peak RSS ${b.rclone.maxRssKB === null ? 'n/a' : `${fmt(mb(b.rclone.maxRssKB))} MB`}; find -printf: ${s(b.find.ms)} s, peak RSS ${b.find.maxRssKB === null ? 'n/a' : `${fmt(mb(b.find.maxRssKB))} MB`} (VACUUM between the audits: ${s(b.vacuumMs)} s)`);
    const peerRss = b.rclone.maxRssKB === null ? 'n/a' : fmt(mb(b.rclone.maxRssKB));
    const rssRatio = (kb: number) => (b.rclone.maxRssKB === null ? '—' : ratio(kb, b.rclone.maxRssKB));
    const k = `local ${b.files >= 1e6 ? `${b.files / 1e6}M` : `${b.files / 1000}k`}`;
    if (b.initial) {
      summary.push(
        [`${k}: initial audit peak RSS MB (vs rclone)`, fmt(mb(b.initial.peakAfterAuditKB)), peerRss, rssRatio(b.initial.peakAfterAuditKB), `< ${TARGET_RSS_MB} MB`, verdict(mb(b.initial.peakAfterAuditKB) < TARGET_RSS_MB)],
        [`${k}: initial audit (discovery) s vs rclone`, s(b.initial.ms), s(b.rclone.ms), ratio(b.initial.ms, b.rclone.ms), '—', '—'],
      );
    }
    summary.push(
      [`${k}: unchanged audit peak RSS MB (vs rclone)`, fmt(mb(b.unchanged.peakAfterAuditKB)), peerRss, rssRatio(b.unchanged.peakAfterAuditKB), `< ${TARGET_RSS_MB} MB`, verdict(mb(b.unchanged.peakAfterAuditKB) < TARGET_RSS_MB)],
      [`${k}: unchanged audit s vs rclone`, s(b.unchanged.ms), s(b.rclone.ms), ratio(b.unchanged.ms, b.rclone.ms), '—', '—'],
    );
  }

  if (r.s3) {
    const x = r.s3;
    const ours = medianRun(x.ours);
    console.log(`\n3. S3 (fauxqs in a child process at ${x.endpoint}): ${x.keys} objects under ${x.bucket}/bench/ in ${x.shape.dirs} prefixes, uploaded at ${fmt(x.upload.opsPerSecond, 0)} PUT/s (${s(x.upload.seconds * 1000)} s)`);
    console.log(`   initial audit (discovers everything): ${s(x.initial.ms)} s ${JSON.stringify(x.initial.counts)}; server CPU meanwhile ${fmt(x.initial.serverCpuSeconds, 2)} s; relay drain ${s(x.initial.drainMs)} s`);
    console.log('   every round, seconds (server CPU seconds meanwhile in brackets; ratio = ours ÷ that peer in the same round):');
    const cpuLine = (runs: Array<{ ms: number; serverCpuSeconds: number }>) => runs.map((q) => `${s(q.ms)} [${fmt(q.serverCpuSeconds, 2)}]`).join(', ');
    console.log(`     ours ${cpuLine(x.ours)}`);
    for (const p of x.peers) {
      const runs = x.peerRuns.get(p.name) as Array<PeerRun & { serverCpuSeconds: number }>;
      console.log(`     ${p.name}: ${cpuLine(runs)}; ratio ${perRoundRatios(x.ours, runs)}`);
    }
    console.log(`     ${x.literal.name} (once; a HEAD per object): ${cpuLine([x.literal.run])}`);
    detail.push(['S3: initial (discovery)', x.initial], ['S3: unchanged (median)', ours]);
    summary.push([`S3 ${x.keys / 1000}k: initial audit (discovery) s`, s(x.initial.ms), '—', '—', '—', '—']);
    const s3Row = (name: string, peerMs: number, main: boolean) => [
      `S3 ${x.keys / 1000}k: unchanged audit s vs ${name}`,
      s(ours.ms),
      s(peerMs),
      ratio(ours.ms, peerMs),
      main ? `≤ ${fmt(TARGET_S3, 1)}× peer` : `(≤ ${fmt(TARGET_S3, 1)}×)`,
      main ? verdict(ours.ms <= TARGET_S3 * peerMs) : ours.ms <= TARGET_S3 * peerMs ? '(pass)' : '(fail)',
    ];
    // The like-for-like peer (a listing, as our audit reads) carries the target; the literal command and --fast-list are shown beside it.
    x.peers.forEach((p, i) => summary.push(s3Row(p.name, medianRun(x.peerRuns.get(p.name) as PeerRun[]).ms, i === 0)));
    summary.push(s3Row(`${x.literal.name} (HEAD per object, 1 run)`, x.literal.run.ms, false));
  }

  if (detail.length > 0) {
    console.log(
      '\nOur audits in detail (in this process: wall time inside the handler; CPU of this process and its walker processes, theirs in brackets; SQL round trips of the audit and ' +
        'the time it waited on them, from send to result, event-loop delays included; the relay\'s statements in the same window apart)',
    );
    console.log(
      formatTable(
        ['audit', 'seconds', 'node CPU s (walkers)', 'machine CPU busy', 'WAL MB', 'SQL round trips', 'SQL wait s', 'relay statements', 'relay drain after, s', 'ANALYZE runs'],
        detail.map(([name, a]) => [
          name,
          s(a.ms),
          `${fmt(a.cpuSeconds, 2)} (${fmt(a.walkerCpuSeconds, 2)})`,
          `${fmt(a.machineBusy * 100, 0)} %`,
          fmt(a.walBytes / 1e6, 1),
          String(roundTrips(a.sql)),
          s(dbWaitMs(a.sql)),
          String(relayTrips(a.sql)),
          s(a.drainMs),
          String(a.analyzeRuns),
        ]),
      ),
    );
    for (const [name, a] of detail) {
      console.log(`\nSQL statements of ${name} (calls, time the caller waited from send to result, rows)`);
      console.log(
        formatTable(
          ['statement', 'calls', 'wait ms', 'ms/call', 'rows'],
          a.sql.slice(0, 14).map((t) => [t.label, String(t.calls), fmt(t.ms, 0), fmt(t.ms / t.calls, 2), String(t.rows)]),
        ),
      );
    }
  }

  if (r.profile) await printProfile(r.profile, r.repoRoot, detail);

  console.log('\nSummary (ratio = filestore ÷ peer; a time ratio ≤ target passes; medians of the rounds)');
  console.log(formatTable(['metric', 'filestore', 'peer', 'ratio', 'target', 'pass/fail'], summary));
  console.log(
    'Peers run as processes (spawn to exit, output to /dev/null); our audits are timed inside the handler of a running ' +
      'worker (no process start). RSS in MB = 10^6 bytes (VmHWM / GNU time KiB × 1024 / 10^6). Page cache warm for everyone.',
  );
  if (r.invalid.length > 0) {
    console.log(`\nINVALID — these figures measure the wrong thing:\n  ${r.invalid.join('\n  ')}`);
  }
}

async function printProfile(file: string, repoRoot: string, detail: Array<[string, AuditResult]>): Promise<void> {
  const groups = new Map<string, AuditResult[]>();
  for (const [name, a] of detail) {
    const kind = name.replace(/ \(median\)$/, '');
    groups.set(kind, [...(groups.get(kind) ?? []), a]);
  }
  console.log(`\nCPU profile of this process: ${file} (open it in Chrome DevTools or speedscope)`);
  for (const [kind, audits] of groups) {
    const sum = await summariseCpuProfile(file, repoRoot, audits.map((a) => a.window), 12);
    const wall = audits.reduce((n, a) => n + a.ms, 0);
    console.log(`\n${kind}: ${fmt(sum.busyMs, 0)} ms of JavaScript/GC busy in ${fmt(wall, 0)} ms of audit wall time`);
    const rows = (top: Array<[string, number]>) => top.map(([name, ms]) => [name, fmt(ms, 0), `${fmt((ms / sum.busyMs) * 100, 1)} %`]);
    console.log(formatTable(['self time by place', 'ms', 'share of busy'], rows(sum.byPlace)));
    console.log(formatTable(['self time by function', 'ms', 'share of busy'], rows(sum.selfTop)));
    console.log(formatTable(['inclusive time by function', 'ms', 'share of busy'], rows(sum.inclusiveTop)));
  }
}
