import { spawn } from 'node:child_process';

/**
 * Runs one orchestrator command in a child process (tests/support/crash-child.ts) that
 * SIGKILLs itself at `crashAt`; resolves with the signal (or exit code) it ended with.
 */
export function crashIn(
  crashAt: 'before-storage' | 'after-storage',
  mount: string,
  command: { name: string; input: Record<string, unknown>; content?: string },
): Promise<NodeJS.Signals | number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'tests/support/crash-child.ts'], {
      env: { ...process.env, CRASH_AT: crashAt, MOUNT: mount, COMMAND: JSON.stringify(command), FILESTORE_ALLOW_INLINE: 'true' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(signal ?? code));
  });
}
