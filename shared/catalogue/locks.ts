import * as crypto from 'node:crypto';
import type { Queryable } from '../db/pool.ts';
import { ancestorsOf, parentOf } from '../paths.ts';

/**
 * Hierarchical path locks on PostgreSQL session advisory locks, held from before the journal
 * entry until after the catalogue commit. A command takes an exclusive lock on each path it
 * changes and shared locks on their ancestors, so commands on different paths of one mount
 * run in parallel, while a recursive command on a directory waits for (and blocks) commands
 * below it. Locks vanish with the connection, so a crashed process never leaves one behind.
 */

export type LockMode = 'shared' | 'exclusive';

export function lockKey(namespace: string, ...parts: string[]): bigint {
  return sha256(parts.length === 1 ? `${namespace}\u0000${parts[0]}` : [namespace, ...parts].join('\u0000')).readBigInt64BE(0);
}

/**
 * One-shot sha256 (crypto.hash, Node >= 20.12: no Hash object, ~2.5x faster on short input; a
 * discovery hashes every path and its ancestors), createHash where it is missing.
 */
const sha256: (s: string) => Buffer =
  typeof (crypto as { hash?: unknown }).hash === 'function'
    ? (s) => (crypto as unknown as { hash(algorithm: string, data: string, encoding: 'buffer'): Buffer }).hash('sha256', s, 'buffer')
    : (s) => crypto.createHash('sha256').update(s).digest();

export interface PathLock {
  key: bigint;
  mode: LockMode;
}

/** Locks for changing `paths` of a mount: exclusive on each, shared on their ancestors. */
export function pathLocks(mountId: string, paths: string[]): PathLock[] {
  return pathLockSet(mountId, paths).locks;
}

export interface PathLockSet {
  /** Exclusive on each path, shared on its ancestors, one per key, in key order (every writer's order). */
  locks: PathLock[];
  /** A path's keys: its own, then its ancestors'. What a partial try-lock tells paths apart by (rarely needed: built when asked). */
  keysOf(path: string): bigint[];
}

/**
 * `pathLocks` with each path's keys beside them. A batch's paths share their ancestors: each
 * distinct path is hashed once, and a path's ancestors are walked up only to the first one
 * an earlier path already had (a discovery's batch of 2,000 files in one directory: one walk
 * up, not 2,000; building every path's key list up front cost a tenth of a discovery's CPU).
 */
export function pathLockSet(mountId: string, paths: string[]): PathLockSet {
  const keyOf = new Map<string, bigint>();
  const key = (p: string): bigint => {
    let k = keyOf.get(p);
    if (k === undefined) keyOf.set(p, (k = lockKey('path', mountId, p)));
    return k;
  };
  const modes = new Map<bigint, LockMode>();
  const walked = new Set<string>();
  for (const p of paths) {
    for (let a = parentOf(p); a !== null && !walked.has(a); a = parentOf(a)) {
      walked.add(a);
      const k = key(a);
      if (!modes.has(k)) modes.set(k, 'shared');
    }
  }
  for (const p of paths) modes.set(key(p), 'exclusive');
  const locks = [...modes.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, mode]) => ({ key: k, mode }));
  return { locks, keysOf: (p) => [key(p), ...ancestorsOf(p).map(key)] };
}

export async function acquire(q: Queryable, locks: PathLock[]): Promise<void> {
  if (locks.length === 0) return;
  await q.query('SELECT filestore.lock_paths($1::bigint[], $2::boolean[])', [
    locks.map((l) => l.key.toString()),
    locks.map((l) => l.mode === 'exclusive'),
  ]);
}

/** Releases locks taken with acquire (and only those). */
export async function release(q: Queryable, locks: PathLock[]): Promise<void> {
  if (locks.length === 0) return;
  await q.query('SELECT filestore.unlock_paths($1::bigint[], $2::boolean[])', [
    locks.map((l) => l.key.toString()),
    locks.map((l) => l.mode === 'exclusive'),
  ]);
}

/** Blocks until no other live process works under this principal's idempotency key. */
export async function lockIdempotencyKey(q: Queryable, principal: string | null, key: string): Promise<void> {
  await q.query('SELECT pg_advisory_lock($1::bigint)', [lockKey('idempotency', principal ?? '', key).toString()]);
}

// Entry locks use the two-int4 keyspace, which never overlaps the bigint one above.
const ENTRY_NAMESPACE = 4242;
const entryObjectId = (entryId: number) => entryId % 2_147_483_647;

/** Marks this connection as the live owner of a journal entry. */
export async function lockEntry(q: Queryable, entryId: number): Promise<void> {
  await q.query('SELECT pg_advisory_lock($1::int, $2::int)', [ENTRY_NAMESPACE, entryObjectId(entryId)]);
}

/** True when no live process owns the entry (and this connection now does). */
export async function tryLockEntry(q: Queryable, entryId: number): Promise<boolean> {
  const { rows } = await q.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::int, $2::int) AS ok', [
    ENTRY_NAMESPACE,
    entryObjectId(entryId),
  ]);
  return rows[0]?.ok === true;
}

export async function unlockEntry(q: Queryable, entryId: number): Promise<void> {
  await q.query('SELECT pg_advisory_unlock($1::int, $2::int)', [ENTRY_NAMESPACE, entryObjectId(entryId)]);
}

export const RELEASE_ALL_SQL = 'SELECT pg_advisory_unlock_all()';

export async function releaseAll(q: Queryable): Promise<void> {
  await q.query('SELECT pg_advisory_unlock_all()');
}
