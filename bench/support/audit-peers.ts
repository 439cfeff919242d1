/**
 * The peers of the audit bench: `rclone lsjson -R` (a Go lister that reads what an audit
 * compares: path, size, mtime) and GNU `find -printf` (the floor of a walk with lstat), each
 * timed from spawn to exit with its output going to /dev/null.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { run } from './big-write.ts';

export interface PeerRun {
  ms: number;
  /** Peak RSS from GNU time (KiB), when it was asked for and is installed. */
  maxRssKB: number | null;
}

export interface Command {
  label: string;
  command: string;
  args: string[];
  /** Added to this process's environment; an undefined value removes the variable. */
  env?: Record<string, string | undefined> | undefined;
}

/** `rclone version`'s first line; installs rclone from Debian when it is missing and we are root. */
export async function ensureRclone(log: (line: string) => void): Promise<string> {
  const version = async () => (await run('rclone', ['version'])).split('\n')[0]?.trim() ?? 'rclone';
  try {
    return await version();
  } catch {
    // not installed
  }
  if (process.getuid?.() !== 0) {
    throw new Error('rclone is not installed: run `sudo apt-get install -y rclone` (Debian/Ubuntu) or see https://rclone.org/install/, then run the bench again');
  }
  log('rclone is missing: apt-get install -y rclone…');
  const install = () => run('apt-get', ['install', '-y', '--no-install-recommends', 'rclone']);
  await install().catch(async () => {
    await run('apt-get', ['update']);
    await install();
  });
  return version();
}

/** Wall time of one run of `c`, stdout to /dev/null (stderr kept for the error message). */
export async function timeCommand(c: Command, o: { withRss?: boolean; scratchFile?: string } = {}): Promise<PeerRun> {
  const gnuTime = o.withRss === true && existsSync('/usr/bin/time') && o.scratchFile !== undefined;
  const [cmd, args] = gnuTime ? ['/usr/bin/time', ['-f', '%M', '-o', o.scratchFile as string, c.command, ...c.args]] : [c.command, c.args];
  const devNull = await open('/dev/null', 'w');
  try {
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const child = spawn(cmd as string, args as string[], { stdio: ['ignore', devNull.fd, 'pipe'], env: { ...process.env, ...c.env } });
      let err = '';
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${c.label} exited with ${code}: ${err.trim().slice(0, 2000)}`))));
    });
    const ms = performance.now() - t0;
    const rss = gnuTime ? Number((await readFile(o.scratchFile as string, 'utf8')).trim().split('\n').pop()) : Number.NaN;
    return { ms, maxRssKB: Number.isFinite(rss) ? rss : null };
  } finally {
    await devNull.close();
  }
}

/** Runs `c` once, untimed, and returns its stdout (to check that a peer lists what it should). */
export function captureCommand(c: Command): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(c.command, c.args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...c.env } });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out).toString('utf8')) : reject(new Error(`${c.label} exited with ${code}: ${err.trim().slice(0, 2000)}`))));
  });
}

/** rclone with no config file of its own (remotes come from RCLONE_CONFIG_* variables). */
const rcloneEnv = (extra: Record<string, string | undefined> = {}) => ({ RCLONE_CONFIG: '/nonexistent/rclone.conf', ...extra });

export function rcloneLsjson(target: string, extraArgs: string[] = [], env: Record<string, string | undefined> = {}): Command {
  return {
    label: `rclone lsjson -R ${[...extraArgs, target].join(' ')}`,
    command: 'rclone',
    args: ['lsjson', '-R', '-q', ...extraArgs, target],
    env: rcloneEnv(env),
  };
}

export function findPrintf(dir: string): Command {
  return { label: `find ${dir} -printf '%p %s %T@ %m\\n'`, command: 'find', args: [dir, '-printf', '%p %s %T@ %m\n'] };
}

/** The RCLONE_CONFIG_FAUX_* variables that make `faux:` an S3 remote on `endpoint` (path style, test credentials). */
export function fauxRemoteEnv(endpoint: string): Record<string, string | undefined> {
  return {
    // rclone's S3 client fails to start when AWS_CA_BUNDLE is set ("unsupported transport"),
    // and a plain-http endpoint needs no CA anyway.
    AWS_CA_BUNDLE: undefined,
    RCLONE_CONFIG_FAUX_TYPE: 's3',
    RCLONE_CONFIG_FAUX_PROVIDER: 'Other',
    RCLONE_CONFIG_FAUX_ENDPOINT: endpoint,
    RCLONE_CONFIG_FAUX_ACCESS_KEY_ID: 'test',
    RCLONE_CONFIG_FAUX_SECRET_ACCESS_KEY: 'test',
    RCLONE_CONFIG_FAUX_FORCE_PATH_STYLE: 'true',
    RCLONE_CONFIG_FAUX_REGION: 'us-east-1',
  };
}

/** Entries in `rclone lsjson` output (a JSON array). */
export function countLsjson(out: string): { files: number; dirs: number } {
  const entries = JSON.parse(out) as Array<{ IsDir: boolean }>;
  const dirs = entries.filter((e) => e.IsDir).length;
  return { files: entries.length - dirs, dirs };
}
