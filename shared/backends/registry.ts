import { defaultMetrics } from '../metrics/prom.ts';
import type { FilestoreMetrics } from '../metrics/metrics.ts';
import { instrumentBackend } from './instrumented.ts';
import { LazyBackend } from './lazy.ts';
import { LocalExecutor } from './local/local-executor.ts';
import { pinnedRootOr } from './local/root-check.ts';
import type { Backend } from './types.ts';

/**
 * What a backend is made from: the storage fields of a mount (the catalogue's `Mount` has them;
 * named here so that backends/ stays below the catalogue, docs/architecture.md).
 */
export interface MountStorage {
  id: string;
  key: string;
  kind: 'local' | 's3';
  rootPath: string | null;
  bucket: string | null;
  prefix: string;
  region: string | null;
  endpoint: string | null;
  /** A changed mount (updated_at) gets a new backend. */
  updatedAt: Date;
}

export interface S3Defaults {
  /** FILESTORE_S3_ENDPOINT: an S3-compatible server, addressed path-style. */
  endpoint?: string | undefined;
  region?: string | undefined;
  credentials?: { accessKeyId: string; secretAccessKey: string } | undefined;
}

export interface BackendRegistryOptions {
  /** Where backend operations are counted (default: defaultMetrics()); null leaves backends uninstrumented. */
  metrics?: FilestoreMetrics | null | undefined;
}

/** One backend instance per mount, built from the mount's row and instrumented (SPEC §7). */
export class BackendRegistry {
  private readonly cache = new Map<string, Backend>();
  private readonly metrics: FilestoreMetrics | null;

  constructor(
    /** Endpoint, region and credentials of S3 mounts (presigned URLs are signed with them too). */
    readonly s3Defaults: S3Defaults = {},
    options: BackendRegistryOptions = {},
  ) {
    this.metrics = options.metrics === undefined ? defaultMetrics() : options.metrics;
  }

  forMount(mount: MountStorage): Backend {
    const key = `${mount.id}:${mount.updatedAt.valueOf()}`;
    let backend = this.cache.get(key);
    if (!backend) {
      backend =
        mount.kind === 'local'
          ? // The root as this process pinned it (root-check.ts): a re-pointed symlink in the path takes a restart.
            new LocalExecutor({ rootPath: pinnedRootOr(mount.rootPath as string) })
          : // The AWS SDK is loaded with the first S3 mount used, not by every process.
            new LazyBackend('s3', async () => {
              const { S3Executor } = await import('./s3/s3-executor.ts');
              return new S3Executor({
                bucket: mount.bucket as string,
                prefix: mount.prefix,
                region: mount.region ?? this.s3Defaults.region ?? 'us-east-1',
                endpoint: mount.endpoint ?? this.s3Defaults.endpoint,
                credentials: this.s3Defaults.credentials,
              });
            });
      if (this.metrics) backend = instrumentBackend(backend, this.metrics);
      this.cache.set(key, backend);
    }
    return backend;
  }
}
