import type { Mount } from '../catalogue/types.ts';
import { LocalExecutor } from './local/local-executor.ts';
import { S3Executor } from './s3/s3-executor.ts';
import type { Backend } from './types.ts';

export interface S3Defaults {
  /** FILESTORE_S3_ENDPOINT: an S3-compatible server, addressed path-style. */
  endpoint?: string | undefined;
  region?: string | undefined;
  credentials?: { accessKeyId: string; secretAccessKey: string } | undefined;
}

/** One backend instance per mount, built from the mount's row. */
export class BackendRegistry {
  private readonly cache = new Map<string, Backend>();

  constructor(private readonly s3Defaults: S3Defaults = {}) {}

  forMount(mount: Mount): Backend {
    const key = `${mount.id}:${mount.updatedAt.valueOf()}`;
    let backend = this.cache.get(key);
    if (!backend) {
      backend =
        mount.kind === 'local'
          ? new LocalExecutor({ rootPath: mount.rootPath as string })
          : new S3Executor({
              bucket: mount.bucket as string,
              prefix: mount.prefix,
              region: mount.region ?? this.s3Defaults.region ?? 'us-east-1',
              endpoint: mount.endpoint ?? this.s3Defaults.endpoint,
              credentials: this.s3Defaults.credentials,
            });
      this.cache.set(key, backend);
    }
    return backend;
  }
}
