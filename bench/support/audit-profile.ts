/**
 * A V8 CPU profile of this process (node:inspector), started and stopped by the bench itself so
 * that the profile covers the audits that run in-process; bench/support/cpu-profile.ts then
 * keeps only the samples inside the audits' windows.
 */
import { Session } from 'node:inspector';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface Profiling {
  /** Stops, writes `<dir>/audit-<pid>.cpuprofile` and returns its path. */
  stop(dir: string): Promise<string>;
}

export async function startProfiling(): Promise<Profiling> {
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) => session.post(method, params ?? {}, (err, out) => (err ? reject(err) : resolve(out))));
  await post('Profiler.enable');
  await post('Profiler.start');
  let stopped = false;
  return {
    async stop(dir: string): Promise<string> {
      if (stopped) throw new Error('the profiler was already stopped');
      stopped = true;
      const { profile } = (await post('Profiler.stop')) as { profile: object };
      session.disconnect();
      await mkdir(dir, { recursive: true });
      const file = join(dir, `audit-${process.pid}.cpuprofile`);
      await writeFile(file, JSON.stringify(profile));
      return file;
    },
  };
}
