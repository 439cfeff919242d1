/**
 * The drift bench's peer and its /proc readers: `inotifywait` (Debian's inotify-tools), the
 * raw kernel notification path with nothing behind it, run as a monitor whose stdout lines
 * are timestamped on arrival; and the inotify watches and memory of any process, read from
 * /proc/<pid>/fdinfo and /proc/<pid>/status.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { run } from './big-write.ts';

/** Child processes of the bench still running (inotifywait, watcher children): what an interrupt must stop. */
export const benchChildren = new Set<ChildProcess>();

/** Adds `child` to benchChildren until it exits. */
export function trackChild<T extends ChildProcess>(child: T): T {
  benchChildren.add(child);
  child.once('exit', () => benchChildren.delete(child));
  return child;
}

/** `inotifywait`'s version line; installs inotify-tools from Debian when it is missing and we are root. */
export async function ensureInotifyTools(log: (line: string) => void): Promise<string> {
  // `inotifywait --help` exits 1 after printing its version line.
  const version = () => {
    const r = spawnSync('inotifywait', ['--help'], { encoding: 'utf8' });
    return r.error ? null : (r.stdout.split('\n')[0]?.trim() ?? 'inotifywait');
  };
  const installed = version();
  if (installed) return installed;
  if (process.getuid?.() !== 0) {
    throw new Error(
      'inotifywait is not installed: run `sudo apt-get install -y inotify-tools` (Debian/Ubuntu; `dnf install inotify-tools` on Fedora), then run the bench again',
    );
  }
  log('inotifywait is missing: apt-get install -y inotify-tools…');
  const install = () => run('apt-get', ['install', '-y', '--no-install-recommends', 'inotify-tools']);
  await install().catch(async () => {
    await run('apt-get', ['update']);
    await install();
  });
  const after = version();
  if (!after) throw new Error('apt-get installed inotify-tools but inotifywait still does not run');
  return after;
}

/** One line of inotifywait's output, stamped with performance.now() when it reached us. */
export interface InotifyLine {
  at: number;
  events: string;
  path: string;
}

export interface InotifyMonitorOptions {
  recursive: boolean;
  /** inotify event names (`-e`), e.g. ['create'] or ['modify', 'close_write']. */
  events: string[];
  /** Run as this user and group (root only): keeps a big tree's watches off root's budget. */
  uid?: number | undefined;
  gid?: number | undefined;
  /** Give up waiting for "Watches established." after this long (default 10 min). */
  startTimeoutMs?: number | undefined;
}

/**
 * `inotifywait -m [-r] -e … --format '%e|%w%f' <dir>`: started, then resolved once it prints
 * "Watches established." on stderr (its start-up is timed from spawn to that line). Every
 * event line goes to the listeners with its arrival time. inotifywait flushes stdout after
 * each event, so a line arrives as soon as the kernel delivered the event to it.
 */
export class InotifyMonitor {
  readonly startMs: number;
  private readonly listeners = new Set<(line: InotifyLine) => void>();
  private exited = false;
  private stderrTail = '';

  private constructor(
    private readonly child: ChildProcess,
    startMs: number,
  ) {
    this.startMs = startMs;
  }

  get pid(): number {
    return this.child.pid as number;
  }

  static async start(dir: string, o: InotifyMonitorOptions): Promise<InotifyMonitor> {
    const args = ['-m', ...(o.recursive ? ['-r'] : []), ...o.events.flatMap((e) => ['-e', e]), '--format', '%e|%w%f', dir];
    const t0 = performance.now();
    const child = trackChild(spawn('inotifywait', args, { stdio: ['ignore', 'pipe', 'pipe'], uid: o.uid, gid: o.gid }));
    let monitor: InotifyMonitor | null = null;
    let early: InotifyLine[] = [];
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (text) => {
      const at = performance.now();
      const bar = text.indexOf('|');
      const line = { at, events: text.slice(0, bar), path: text.slice(bar + 1) };
      if (monitor) for (const l of monitor.listeners) l(line);
      else early.push(line);
    });
    const startMs = await new Promise<number>((resolve, reject) => {
      let err = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`inotifywait ${args.join(' ')}: no "Watches established." within ${o.startTimeoutMs ?? 600_000} ms`));
      }, o.startTimeoutMs ?? 600_000);
      child.stderr?.setEncoding('utf8').on('data', (d: string) => {
        err += d;
        if (monitor) monitor.stderrTail = (monitor.stderrTail + d).slice(-4000);
        if (err.includes('Watches established.')) {
          clearTimeout(timer);
          resolve(performance.now() - t0);
        }
      });
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`inotifywait ${args.join(' ')} exited with ${code} before watching: ${err.trim().slice(0, 2000)}`));
      });
    });
    monitor = new InotifyMonitor(child, startMs);
    child.once('exit', () => {
      (monitor as InotifyMonitor).exited = true;
    });
    for (const line of early) for (const l of monitor.listeners) l(line);
    early = [];
    return monitor;
  }

  /** Calls `fn` for every line from now on; returns the unsubscribe function. */
  onLine(fn: (line: InotifyLine) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** What it wrote on stderr lately (e.g. a "Failed to watch …; upper limit on inotify watches reached!"). */
  stderr(): string {
    return this.stderrTail;
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(timer);
  }
}

/** inotify watches held by process `pid` (all its inotify fds), from /proc/<pid>/fdinfo; null if unreadable. */
export async function inotifyWatchesOfPid(pid: number): Promise<number | null> {
  let fds: string[];
  try {
    fds = await readdir(`/proc/${pid}/fd`);
  } catch {
    return null;
  }
  let n = 0;
  for (const fd of fds) {
    try {
      if ((await readlink(`/proc/${pid}/fd/${fd}`)) !== 'anon_inode:inotify') continue;
      const info = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      for (const line of info.split('\n')) if (line.startsWith('inotify wd:')) n++;
    } catch {
      // closed while we looked
    }
  }
  return n;
}

/** Current and peak resident set size of `pid` in KiB (VmRSS, VmHWM); null where /proc is unreadable. */
export async function rssOfPid(pid: number | 'self'): Promise<{ rssKB: number; peakKB: number } | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
    return { rssKB: field('VmRSS'), peakKB: field('VmHWM') };
  } catch {
    return null;
  }
}

/** fs.inotify limits of this kernel. */
export async function inotifyLimits(): Promise<{ maxUserWatches: number; maxUserInstances: number; maxQueuedEvents: number }> {
  const read = async (name: string) => Number((await readFile(`/proc/sys/fs/inotify/${name}`, 'utf8').catch(() => 'NaN')).trim());
  return {
    maxUserWatches: await read('max_user_watches'),
    maxUserInstances: await read('max_user_instances'),
    maxQueuedEvents: await read('max_queued_events'),
  };
}

/**
 * inotify watches held right now by every process of user `uid` that we can see (the budget
 * `max_user_watches` is per user): how much of it other work is using at the start.
 */
export async function inotifyWatchesOfUser(uid: number): Promise<{ watches: number; processes: number }> {
  let watches = 0;
  let processes = 0;
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const status = await readFile(`/proc/${entry}/status`, 'utf8');
      if (Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) !== uid) continue;
      const n = await inotifyWatchesOfPid(Number(entry));
      if (n) {
        watches += n;
        processes++;
      }
    } catch {
      // gone
    }
  }
  return { watches, processes };
}

