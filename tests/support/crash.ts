import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { TEST_DATABASE_URL } from './env.ts';

/**
 * Runs one orchestrator command in a child process (tests/support/crash-child.ts) that
 * SIGKILLs itself at `crashAt`; resolves with the signal (or exit code) it ended with, once
 * the dead process's database sessions are gone too (PostgreSQL notices a dead client late
 * on a loaded machine, and its session still holds the command's locks until then — as a
 * real crash would, until the server notices).
 */
export function crashIn(
  crashAt: 'before-storage' | 'during-storage' | 'after-storage',
  mount: string,
  command: { name: string; input: Record<string, unknown>; content?: string; sizeBytes?: number },
  /** More environment for the child (e.g. TEST_DATABASE_URL: a catalogue of the test's own). */
  env: Record<string, string> = {},
): Promise<NodeJS.Signals | number | null> {
  const appName = `crash-${randomUUID().slice(0, 8)}`;
  return new Promise<NodeJS.Signals | number | null>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'tests/support/crash-child.ts'], {
      env: { ...process.env, ...env, CRASH_AT: crashAt, MOUNT: mount, COMMAND: JSON.stringify(command), FILESTORE_ALLOW_INLINE: 'true', PGAPPNAME: appName },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(signal ?? code));
  }).then(async (ended) => {
    await endSessions(appName);
    return ended;
  });
}

async function endSessions(appName: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    await client.query('SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = $1', [appName]);
  } finally {
    await client.end();
  }
}
