import type { MountStorage } from '../backends/registry.ts';
import type { NodeKind } from '../backends/types.ts';

export type ConsistencyState = 'ACTIVE' | 'INCONSISTENT' | 'MISSING';

/** A catalogued mount: its storage fields (what a backend is made from), and the catalogue's. */
export interface Mount extends MountStorage {
  agentId: string | null;
  accessMode: 'rw' | 'ro';
  state: 'active' | 'paused';
  /** What the last reconciliation found of the mount's root: unknown until one ran. */
  health: 'unknown' | 'healthy' | 'unhealthy';
  healthReason: string | null;
  healthCheckedAt: Date | null;
  createdAt: Date;
}

/** A catalogue row, in the camelCase shape the API returns. */
export interface CatalogueNode {
  id: number;
  mountId: string;
  path: string;
  parentId: number | null;
  name: string;
  kind: NodeKind;
  sizeBytes: number;
  sha256: string | null;
  etag: string | null;
  sequencer: string | null;
  mode: number | null;
  uid: number | null;
  gid: number | null;
  mtime: Date | null;
  version: number;
  consistencyState: ConsistencyState;
  consistencyCheckedAt: Date | null;
  lastDriftDetectedAt: Date | null;
  lastReconciledAt: Date | null;
  deletedAt: Date | null;
  metadata: Record<string, unknown>;
  createdAt: Date;
  updatedAt: Date;
}

export interface Rollup {
  sizeBytes: number;
  fileCount: number;
  dirCount: number;
  childCount: number;
  lastCalculatedAt: Date;
}

/** Change to a directory's totals; applied to every ancestor of the changed node. */
export interface RollupDelta {
  sizeBytes: number;
  fileCount: number;
  dirCount: number;
}
