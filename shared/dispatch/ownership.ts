import type { Mount } from '../catalogue/types.ts';

/**
 * Which mounts a process executes itself (SPEC §1, §4):
 * - `undefined`: one process runs everything (`npm start` before agents existed, tests): every mount;
 * - an agent id: S3 mounts, its own local mounts, and local mounts assigned to no agent;
 * - `null`: an API-only process (the API Lambda): S3 mounts only; it has no local disks.
 */
export type ProcessIdentity = string | null | undefined;

/** True when `identity` executes commands on (and serves the bytes of) `mount` itself. */
export function executesHere(identity: ProcessIdentity, mount: Pick<Mount, 'kind' | 'agentId'>): boolean {
  if (mount.kind === 's3' || identity === undefined) return true;
  if (identity === null) return false;
  return mount.agentId === null || mount.agentId === identity;
}
