import { createHash } from 'node:crypto';
import { appendFile, mkdtemp, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { LocalExecutor } from '../shared/backends/local/local-executor.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, sharedS3, startFilestore, stopS3, uniqueKey } from './support/filestore.ts';
import { putRawKey } from './support/s3.ts';
import { startS3Proxy } from './support/s3-proxy.ts';

// A hash audit reads every byte of a file; a file rewritten meanwhile must not get a hash
// that belongs to no version of it (or to another version than the one recorded beside it).

const KiB = 1024;
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** Reads a stream to its end: the bytes, or the error it failed with and the bytes before it. */
async function drain(stream: Readable): Promise<{ bytes: Buffer; error: { code?: string } | null }> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of stream) chunks.push(c as Buffer);
    return { bytes: Buffer.concat(chunks), error: null };
  } catch (err) {
    return { bytes: Buffer.concat(chunks), error: err as { code?: string } };
  }
}

describe('LocalExecutor: one version per read', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'filestore-torn-'));
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  /** A backend that runs `change` once, when the read reaches `at` bytes. */
  const changingAt = (at: number, change: () => Promise<void>) => {
    let done = false;
    return new LocalExecutor({
      rootPath: root,
      onRead: async (_p, position) => {
        if (!done && position >= at) {
          done = true;
          await change();
        }
      },
    });
  };

  it('a file rewritten in place while hashed (same size, mtime put back) hashes to null, not to a mix of both versions', async () => {
    const file = path.join(root, 'h.bin');
    const a = Buffer.alloc(1024 * KiB, 'A');
    const b = Buffer.alloc(1024 * KiB, 'B');
    await writeFile(file, a);
    const before = await stat(file);
    const backend = changingAt(512 * KiB, async () => {
      await writeFile(file, b);
      await utimes(file, before.atime, before.mtime);
    });
    expect(await backend.hash('h.bin')).toBeNull();
    // Quiet again: the whole of what is there, with the mtime that was put back.
    const again = await new LocalExecutor({ rootPath: root }).hash('h.bin');
    expect(again).toMatchObject({ sha256: sha256(b), sizeBytes: b.length });
    expect(again?.mtime?.getTime()).toBe(before.mtime.getTime());
  });

  it.each([
    ['truncated', (f: string) => truncate(f, 300 * KiB)],
    ['appended to', (f: string) => appendFile(f, Buffer.alloc(64 * KiB, 'Z'))],
    ['rewritten with the same size', (f: string) => writeFile(f, Buffer.alloc(1024 * KiB, 'B'))],
  ])('a read stream of a file %s under it fails before its last byte', async (_what, change) => {
    const file = path.join(root, 'r.bin');
    await writeFile(file, Buffer.alloc(1024 * KiB, 'A'));
    const opened = await changingAt(256 * KiB, () => change(file)).open('r.bin');
    expect(opened.length).toBe(1024 * KiB);
    const { bytes, error } = await drain(opened.stream);
    expect(error).toMatchObject({ code: 'STORAGE_ERROR' });
    expect(bytes.length).toBeLessThan(1024 * KiB);
  });

  it('a read stream of a quiet file gives exactly its bytes', async () => {
    const file = path.join(root, 'q.bin');
    const bytes = Buffer.alloc(700 * KiB, 'Q');
    await writeFile(file, bytes);
    const opened = await changingAt(Number.MAX_SAFE_INTEGER, async () => {}).open('q.bin', { start: 100 });
    expect(opened).toMatchObject({ sizeBytes: bytes.length, length: bytes.length - 100, range: { start: 100, end: bytes.length - 1 } });
    const got = await drain(opened.stream);
    expect(got.error).toBeNull();
    expect(got.bytes.equals(bytes.subarray(100))).toBe(true);
  });
});

describe('hash audits', () => {
  let core: Filestore;
  beforeAll(async () => {
    // Follow-up jobs stay queued (nothing consumes them here): the test runs them itself.
    core = await startFilestore({ reconcile: { queueRedisUrl: 'inline', consume: false, mountIds: [] } });
  });
  afterEach(() => vi.restoreAllMocks());
  afterAll(async () => {
    await core.close();
    await stopS3();
  });

  async function run(mountId: string, p: string, options: Record<string, unknown>) {
    const { rows } = await core.pool.query(
      `INSERT INTO filestore.reconciliation_jobs (mount_id, path, reason, options, status) VALUES ($1, $2, 'manual', $3, 'running')
       RETURNING id, mount_id AS "mountId", path, reason, options, status, attempts, coalesced, result, error,
                 created_at AS "createdAt", started_at AS "startedAt", finished_at AS "finishedAt", updated_at AS "updatedAt"`,
      [mountId, p, JSON.stringify(options)],
    );
    return createReconciler(core)(rows[0], async () => {});
  }

  const queuedFollowUps = async (mountId: string) =>
    (
      await core.pool.query<{ path: string; options: Record<string, unknown> }>(
        `SELECT path, options FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND status = 'queued' ORDER BY id`,
        [mountId],
      )
    ).rows;

  /** The mount's backend is `backend` for the reconciler (a LocalExecutor with a read seam). */
  function useBackend(mount: Mount, backend: LocalExecutor): void {
    const forMount = core.backends.forMount.bind(core.backends);
    vi.spyOn(core.backends, 'forMount').mockImplementation((m) => (m.id === mount.id ? backend : forMount(m)));
  }

  it('local: a file rewritten in place while the audit hashes it (same size, mtime put back) gets no hash of the mix; a follow-up records the new bytes', async () => {
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    const file = path.join(root, 'torn.bin');
    const a = Buffer.alloc(1024 * KiB, 'A');
    const b = Buffer.alloc(1024 * KiB, 'B');
    await core.orchestrator.writeFile(t.mount.id, { path: 'torn.bin' }, Readable.from([a]));
    const before = await stat(file);
    let rewritten = false;
    useBackend(
      t.mount,
      new LocalExecutor({
        rootPath: root,
        onRead: async (p, position) => {
          if (p === 'torn.bin' && position >= 512 * KiB && !rewritten) {
            rewritten = true;
            await writeFile(file, b);
            await utimes(file, before.atime, before.mtime);
          }
        },
      }),
    );
    const counts = await run(t.mount.id, '', { recursive: true, hash: true });
    expect(rewritten).toBe(true);
    // Whatever is recorded is the hash of a version the file had, never of the mix the audit read.
    const node = await findLiveByPath(core.pool, t.mount.id, 'torn.bin');
    expect([sha256(a), sha256(b)]).toContain(node?.sha256);
    // Nothing this audit read describes the file: the record stands, and the path is looked at again.
    expect(node).toMatchObject({ sha256: sha256(a), version: 1 });
    expect(counts).toMatchObject({ updated: 0, deferred: 1 });
    expect(await queuedFollowUps(t.mount.id)).toEqual([{ path: 'torn.bin', options: expect.objectContaining({ hash: true, followUp: 1 }) }]);
    // The follow-up, on a quiet file: the bytes now there (same size and mtime, so only the hash tells).
    expect(await run(t.mount.id, 'torn.bin', { recursive: false, hash: true, followUp: 1 })).toMatchObject({ updated: 1 });
    expect(await findLiveByPath(core.pool, t.mount.id, 'torn.bin')).toMatchObject({ sha256: sha256(b), version: 2 });
    await t.cleanup();
  });

  it('s3: an object replaced between the listing and its hash: the new bytes\' hash is not recorded beside the old version', async () => {
    const server = await sharedS3();
    const proxy = await startS3Proxy(server.endpoint);
    try {
      const bucket = await server.createBucket();
      const mount = await createMount(core.pool, { key: uniqueKey('s3'), kind: 's3', bucket, prefix: 'tenant/', endpoint: proxy.endpoint, region: 'us-east-1' });
      const v1 = Buffer.from('the first version');
      const v2 = Buffer.from('the second version, longer');
      await core.orchestrator.writeFile(mount.id, { path: 'obj.txt' }, Readable.from([v1]));
      const recorded = await findLiveByPath(core.pool, mount.id, 'obj.txt');
      expect(recorded).toMatchObject({ sha256: sha256(v1), sizeBytes: v1.length });
      // The audit lists v1; its GetObject then finds v2.
      proxy.beforeForward(async (method, url) => {
        if (method === 'GET' && url.startsWith(`/${bucket}/tenant/obj.txt`)) {
          proxy.beforeForward(null);
          await putRawKey(server.client, bucket, 'tenant/obj.txt', v2);
        }
      });
      const counts = await run(mount.id, '', { recursive: true, hash: true });
      const node = await findLiveByPath(core.pool, mount.id, 'obj.txt');
      // Whatever is recorded belongs together: v1's size and ETag with v1's hash.
      expect(node).toMatchObject({ sha256: sha256(v1), sizeBytes: v1.length, etag: recorded?.etag });
      expect(counts).toMatchObject({ deferred: 1 });
      expect(await queuedFollowUps(mount.id)).toEqual([{ path: 'obj.txt', options: expect.objectContaining({ hash: true, followUp: 1 }) }]);
      expect(await run(mount.id, 'obj.txt', { recursive: false, hash: true, followUp: 1 })).toMatchObject({ updated: 1 });
      expect(await findLiveByPath(core.pool, mount.id, 'obj.txt')).toMatchObject({ sha256: sha256(v2), sizeBytes: v2.length });
    } finally {
      await proxy.stop();
    }
  });
});
