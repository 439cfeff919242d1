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

/**
 * True when `identity` may judge a mount's pending journal entries from what its storage holds
 * (recovery). That needs the storage itself: a local mount's root is only meaningful on its
 * agent's host (another host may see an empty or unrelated directory at that path), so an owned
 * local mount is judged by its agent alone; an unassigned one by any process that could run its
 * commands; S3 mounts by anyone.
 */
export function recoversHere(identity: ProcessIdentity, mount: Pick<Mount, 'kind' | 'agentId'>): boolean {
  if (mount.kind === 's3') return true;
  if (mount.agentId !== null) return mount.agentId === identity;
  return identity !== null;
}
