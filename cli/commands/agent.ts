import type { Command } from 'commander';
import { runAgent } from '../../agent/main.ts';

/** `filestore agent` (npm run agent): the on-prem agent for the local mounts of FILESTORE_AGENT_ID (agent/main.ts). */
export function registerAgent(program: Command): void {
  program
    .command('agent')
    .description('run the on-prem agent: commands, reconciliation, audits and watchers for the local mounts of FILESTORE_AGENT_ID, with /metrics, /healthz, /readyz and file transfers over HTTP')
    .action(runAgent);
}
