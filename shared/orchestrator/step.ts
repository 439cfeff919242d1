import type { Backend } from '../backends/types.ts';
import type { PoolClient } from '../db/pool.ts';
import { patchRequest } from '../catalogue/journal.ts';
import type { Mount } from '../catalogue/types.ts';
import type { Step } from './context.ts';

export function makeStep(q: PoolClient, mount: Mount, backend: Backend, entryId: number): Step {
  return { q, mount, backend, entryId, journal: (patch) => patchRequest(q, entryId, patch) };
}
