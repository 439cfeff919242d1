// The names a mount may have, as constants that import nothing: the catalogue checks them, and so
// does the CDK app's configuration (cdk/config.ts), which may import this file and no other
// runtime code (docs/architecture.md, the layers).

/** A mount key, as the catalogue's CHECK constraint has it. */
export const MOUNT_KEY_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** An S3 bucket name (3–63 lower-case letters, digits, dots and hyphens, a letter or digit at each end). */
export const S3_BUCKET_PATTERN = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
export const MAX_S3_PREFIX_LENGTH = 1024;
