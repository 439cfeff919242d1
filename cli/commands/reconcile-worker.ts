import type { Command } from 'commander';
import { runReconcileWorker } from '../../reconcile-worker/main.ts';

/** `filestore reconcile-worker` (npm run filestore:reconcile): the reconciliation worker (reconcile-worker/main.ts). */
export function registerReconcileWorker(program: Command): void {
  program
    .command('reconcile-worker')
    .description('run the reconciliation worker (BullMQ consumer of filestore-reconcile) and the audit scheduler')
    .action(runReconcileWorker);
}
