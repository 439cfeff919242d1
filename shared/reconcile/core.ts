import type { BackendRegistry } from '../backends/registry.ts';
import type { Pool } from '../db/pool.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';
import type { ReconcileQueue } from './queue.ts';

/**
 * What the engine needs of the core: the catalogue, storage, metrics, the queue (follow-ups),
 * cache and relay. The runtime's `Filestore` has all of it; naming the parts here keeps
 * reconcile/ below runtime.ts (docs/architecture.md, the layers).
 */
export interface ReconcileCore {
  pool: Pool;
  backends: BackendRegistry;
  metrics: FilestoreMetrics;
  /** Reconciliation requests (follow-ups the engine enqueues). */
  reconcile: ReconcileQueue;
  /** After a commit that changed a mount outside the orchestrator (reconciliation): cache and relay. */
  changed(mountId: string): Promise<void>;
}
