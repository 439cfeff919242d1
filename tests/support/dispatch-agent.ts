import { spawn, type ChildProcess } from 'node:child_process';
import { TEST_COMMAND_SECRET } from './command-secret.ts';

export interface AgentChild {
  child: ChildProcess;
  /** Resolves with the first stdout line matching `pattern` (already printed or still to come). */
  line(pattern: RegExp): Promise<RegExpExecArray>;
  /** Resolves with the signal or exit code it ended with. */
  exited: Promise<NodeJS.Signals | number | null>;
}

/** Runs tests/support/dispatch-agent-child.ts as a separate process: a real agent. */
export function spawnAgent(agentId: string, o: { pauseAfterStorage?: boolean } = {}): AgentChild {
  const child = spawn(process.execPath, ['--import', 'tsx', 'tests/support/dispatch-agent-child.ts'], {
    env: { ...process.env, AGENT_ID: agentId, PAUSE_AFTER_STORAGE: o.pauseAfterStorage ? '1' : '', FILESTORE_ALLOW_INLINE: 'true', FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  const waiters: Array<{ pattern: RegExp; resolve: (m: RegExpExecArray) => void }> = [];
  let buffer = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      lines.push(line);
      for (const w of [...waiters]) {
        const m = w.pattern.exec(line);
        if (m) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    }
  });
  const exited = new Promise<NodeJS.Signals | number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(signal ?? code));
  });
  return {
    child,
    exited,
    line(pattern) {
      for (const l of lines) {
        const m = pattern.exec(l);
        if (m) return Promise.resolve(m);
      }
      return new Promise((resolve, reject) => {
        waiters.push({ pattern, resolve });
        void exited.then((how) => reject(new Error(`the agent exited (${String(how)}) before printing ${pattern}`)));
      });
    },
  };
}
