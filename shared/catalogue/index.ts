// What the shells may use of the catalogue (SQL over the pool; no package beyond pg).
export { HEARTBEAT_TTL_INTERVALS, type Agent } from './agents.ts';
export { lockKey } from './locks.ts';
export { createMount, findMount, listMounts } from './mounts.ts';
export { countLiveNodes, countLiveTree, setMountHealth } from './reconcile-writes.ts';
export { recordedRootIdentity } from './root-identity.ts';
export {
  MAX_S3_PREFIX_LENGTH,
  MOUNT_KEY_PATTERN,
  normaliseS3Prefix,
  registerConfiguredS3Mounts,
  S3_BUCKET_PATTERN,
  type ConfiguredMountsReport,
  type ConfiguredS3Mount,
} from './s3-mounts.ts';
export type { Mount } from './types.ts';
