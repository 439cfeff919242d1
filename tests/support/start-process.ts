import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { chmod, mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { bundleCli, DIST_DIR } from '../../cli/bundle.ts';

/**
 * `npm start` as a process of its own (the bundled CLI's `start`, what `npm start` runs after
 * its build step), for the tests of what a user sees of it: its banner, its stop, its children.
 */
export const START_BUNDLE = path.join(DIST_DIR, 'filestore.js');

let built: Promise<void> | undefined;
/** npm start's build step, once per test file. */
export function buildOnce(): Promise<void> {
  return (built ??= bundleCli());
}

/** A fresh folder to start in (0755: as root, user postgres must reach the embedded database's data). */
export async function startFolder(prefix = 'filestore-start-'): Promise<string> {
  const cwd = await mkdtemp(path.join(os.tmpdir(), prefix));
  await chmod(cwd, 0o755);
  return cwd;
}

/** The environment of a newcomer: no database, Redis or tokens configured; any free port. */
export function newcomerEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0', ...extra };
  for (const name of ['DATABASE_URL', 'REDIS_URL', 'FILESTORE_TOKEN', 'FILESTORE_API_TOKENS', 'FILESTORE_ENABLE_WATCHERS', 'FILESTORE_URL']) {
    if (!(name in extra)) delete env[name];
  }
  return env;
}

export interface StartedProcess {
  child: ChildProcess;
  /** Everything written so far, stdout and stderr interleaved. */
  output(): string;
  exited: Promise<number | null>;
  /** Resolves once `line` appears (its match); rejects if the process exits first. */
  waitFor(line: RegExp, boundMs?: number): Promise<RegExpExecArray>;
  /** The API's URL from the banner (once started). */
  url(): string;
}

/** Runs `command args` in `cwd`, its output collected. */
export function launch(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, options: SpawnOptions = {}): StartedProcess {
  const child = spawn(command, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], ...options });
  let out = '';
  const waiters = new Set<() => void>();
  const more = (d: Buffer) => {
    out += d.toString();
    for (const w of waiters) w();
  };
  child.stdout?.on('data', more);
  child.stderr?.on('data', more);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
  return {
    child,
    output: () => out,
    exited,
    waitFor(line, boundMs = 120_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = line.exec(out);
          if (m) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(m);
          }
        };
        const timer = setTimeout(() => reject(new Error(`no ${line} within ${boundMs} ms; output:\n${out}`)), boundMs);
        void exited.then((code) => {
          if (!line.exec(out)) reject(new Error(`exited with ${code} before ${line}; output:\n${out}`));
        });
        waiters.add(check);
        check();
      });
    },
    url() {
      const url = /filestore running at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];
      if (!url) throw new Error(`no URL in the banner:\n${out}`);
      return url;
    },
  };
}

/** `npm start` in `cwd` (after buildOnce()). */
export function startFilestore(cwd: string, env: NodeJS.ProcessEnv, options: SpawnOptions = {}): StartedProcess {
  return launch(process.execPath, [START_BUNDLE, 'start'], cwd, env, options);
}

/** Pids of live processes whose command line contains `needle` (from /proc), with their command lines. */
export function processesMatching(needle: string): Array<{ pid: number; cmd: string }> {
  const found: Array<{ pid: number; cmd: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      const state = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'))?.[1];
      if (state !== 'Z' && cmd.includes(needle)) found.push({ pid: Number(entry), cmd });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** Every live descendant of `pid` (from /proc's parent links), taken now. */
export function descendants(pid: number): Array<{ pid: number; cmd: string }> {
  const parentOf = new Map<number, number>();
  const cmdOf = new Map<number, string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z') continue;
      parentOf.set(Number(entry), Number(fields[1]));
      cmdOf.set(Number(entry), readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim());
    } catch {
      // gone meanwhile
    }
  }
  const out: Array<{ pid: number; cmd: string }> = [];
  const walk = (p: number) => {
    for (const [child, parent] of parentOf) {
      if (parent === p) {
        out.push({ pid: child, cmd: cmdOf.get(child) ?? '' });
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

/** Resolves once `done()` holds, checking every 100 ms; false if it still does not after `boundMs`. */
export async function eventually(done: () => boolean | Promise<boolean>, boundMs = 30_000): Promise<boolean> {
  for (let waited = 0; waited < boundMs; waited += 100) {
    if (await done()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return done();
}
