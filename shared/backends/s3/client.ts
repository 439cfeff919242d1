import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';

export interface S3ClientOptions {
  region?: string | undefined;
  /** An S3-compatible server (MinIO, an emulator); addressed path-style unless told otherwise. */
  endpoint?: string | undefined;
  forcePathStyle?: boolean | undefined;
  credentials?: { accessKeyId: string; secretAccessKey: string } | undefined;
  /** Attempts per request, the first included (default 6). */
  maxAttempts?: number | undefined;
}

/** Region used when none is configured; real buckets elsewhere are reached by following redirects. */
export const DEFAULT_REGION = 'us-east-1';

/**
 * Attempts per request. S3 answers a request rate it cannot absorb yet with 503 SlowDown and
 * asks clients to back off and retry ("Best practices design patterns: optimizing Amazon S3
 * performance", https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html);
 * the SDK's default of 3 gives up after ~1.5 s of throttling, too early for a bulk tree copy.
 */
export const DEFAULT_MAX_ATTEMPTS = 6;

const CONNECTION_TIMEOUT_MS = 10_000;

/**
 * Builds the client of one mount. Retries use the SDK's standard mode: exponential backoff with
 * full jitter, a 500 ms base for throttling errors (SlowDown, 503), and a per-client retry quota
 * so a failing endpoint is not hammered
 * (https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html).
 * Credentials go to the SDK only; nothing here logs or returns them.
 */
export function createS3Client(options: S3ClientOptions): S3Client {
  const config: S3ClientConfig = {
    region: options.region ?? DEFAULT_REGION,
    maxAttempts: options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
    retryMode: 'standard',
    // Without it a blackholed endpoint hangs a command until the OS gives up (minutes); a timed
    // out connection attempt is retried like any transient error. No overall request timeout:
    // a download may legitimately sit idle while the caller's client applies backpressure.
    requestHandler: { connectionTimeout: CONNECTION_TIMEOUT_MS },
  };
  if (options.credentials !== undefined) config.credentials = options.credentials;
  if (options.endpoint !== undefined) {
    config.endpoint = options.endpoint;
    // Virtual-hosted addressing needs DNS for <bucket>.<host>, which custom servers rarely have.
    config.forcePathStyle = options.forcePathStyle ?? true;
    // S3-compatible servers often reject the CRC checksums newer SDKs send by default; send them
    // only where the API requires one (https://docs.aws.amazon.com/sdkref/latest/guide/feature-dataintegrity.html).
    // Filestore verifies content with its own sha256 either way.
    config.requestChecksumCalculation = 'WHEN_REQUIRED';
    config.responseChecksumValidation = 'WHEN_REQUIRED';
  } else {
    if (options.forcePathStyle !== undefined) config.forcePathStyle = options.forcePathStyle;
    // A bucket outside the configured region answers 301; follow it instead of failing.
    config.followRegionRedirects = true;
  }
  return new S3Client(config);
}
