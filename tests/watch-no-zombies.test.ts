import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * Issue 16: with watchers on, `[sh] <defunct>` processes piled up under the server and the
 * agent. @parcel/watcher, left to choose its backend, probes for watchman with
 * popen("watchman … get-sockname") and, where watchman is absent, throws before pclose: the
 * shell stays a zombie, one per subscription. agent/watch/backends/parcel.ts names the
 * backend (inotify on Linux). The agent image also runs tini as PID 1 (tests/agent-image.test.ts).
 */
const CHILD = fileURLToPath(new URL('./support/parcel-zombie-child.ts', import.meta.url));

/** The processes whose parent is `pid`, as "name state" (from /proc/<pid>/stat). */
function childrenOf(pid: number): string[] {
  const out: string[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // ended meanwhile
    }
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(ppid) === pid) out.push(`${name} ${state}`);
  }
  return out;
}

describe.runIf(process.platform === 'linux')('the parcel watcher backend', () => {
  it('leaves no zombie process behind when it subscribes (start and rewatch)', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'filestore-zombies-'));
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('watching')) resolve();
        });
        child.on('exit', (code) => reject(new Error(`the watching process exited with ${code}: ${out}`)));
      });
      expect(childrenOf(child.pid as number).filter((c) => c.endsWith(' Z'))).toEqual([]);
    } finally {
      child.stdin.end();
      await new Promise((resolve) => child.on('exit', resolve));
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
