import type { Backend } from '../backends/types.ts';
import type { Mount } from '../catalogue/types.ts';
import type { Queryable } from '../db/pool.ts';
import { LocalStrategy } from './strategies/local.ts';
import { nestedStagingPaths, S3Strategy } from './strategies/s3.ts';
import type { ReconcileStrategy } from './strategies/types.ts';

// The interface lives beside its implementations (strategies/types.ts), which it picks from here.
export type { ReconcileStrategy };

export interface StrategyOptions {
  /** S3: wait this long before the second look (eventually consistent S3-compatible stores). */
  s3MissingGraceMs: number;
  /** S3: where the mounts of its bucket are read, to hide nested mounts' staging areas (strategies/s3.ts). */
  catalogue?: Queryable | undefined;
}

export function strategyFor(mount: Mount, backend: () => Backend, o: StrategyOptions): ReconcileStrategy {
  if (mount.kind === 'local') return new LocalStrategy(mount.rootPath as string, backend);
  const q = o.catalogue;
  return new S3Strategy(backend, o.s3MissingGraceMs, q ? () => nestedStagingPaths(q, mount) : undefined);
}
