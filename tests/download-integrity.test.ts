import { randomBytes } from 'node:crypto';
import { appendFile, readdir, readFile, readlink, realpath, rm, stat, symlink, truncate, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LocalExecutor } from '../shared/backends/local/local-executor.ts';
import type { OpenedFile, RangeRequest } from '../shared/backends/types.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { sharedS3, uniqueKey } from './support/filestore.ts';
import { eventually, expectError, qs, sha256, useApiServer } from './support/http.ts';
import { RawConnection } from './support/raw-http.ts';
import { putRawKey } from './support/s3.ts';
import { startS3Proxy } from './support/s3-proxy.ts';

// A download's headers describe the bytes that follow them: Content-Length is exactly the
// body's length (anything else desynchronises a kept-alive connection), and the ETag is the
// recorded sha256 only while the bytes sent are the version it was recorded for.

const api = useApiServer('write');
const { c, mountOf } = api;
const MiB = 1024 * 1024;

const fileUrl = (mountId: string, p: string) => `/v1/files?${qs({ mountId, path: p })}`;
const download = (mountId: string, p: string, headers?: Record<string, string>) =>
  c.call('GET', fileUrl(mountId, p), { token: 'read', ...(headers ? { headers } : {}) });

afterEach(() => vi.restoreAllMocks());

/** How many descriptors this process (the test server runs in it) holds open on `file`. */
async function openHandlesOn(file: string): Promise<number> {
  let n = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => null);
    if (target === file) n++;
  }
  return n;
}

/** The server opens `mount`'s files through `backend` (a LocalExecutor with a seam). */
function useBackend(mount: Mount, backend: LocalExecutor): void {
  const backends = api.server.core.backends;
  const forMount = backends.forMount.bind(backends);
  vi.spyOn(backends, 'forMount').mockImplementation((m) => (m.id === mount.id ? backend : forMount(m)));
}

describe('a download on a kept-alive connection, the file changing while it is sent (local)', () => {
  // 32 MiB: far more than the socket buffers hold (a few MiB on loopback), so the server is
  // still reading the file when the client, paused after the response head, lets it change.
  const SIZE = 32 * MiB;

  it.each<[string, ((file: string) => Promise<void>) | null]>([
    ['appended to', (file) => appendFile(file, Buffer.alloc(MiB, 'Z'))],
    ['truncated', (file) => truncate(file, SIZE / 2)],
    ['left alone', null],
  ])('%s: the body never disagrees with Content-Length, and nothing but the next response follows it', async (_what, change) => {
    const t = await mountOf('local');
    const file = path.join(t.root as string, 'big.bin');
    const content = randomBytes(SIZE);
    await api.server.core.orchestrator.writeFile(t.mount.id, { path: 'big.bin' }, Readable.from([content]));
    const auth = { authorization: `Bearer ${api.server.tokens.read}` };
    const conn = await RawConnection.open(c.url);
    try {
      conn.send(fileUrl(t.mount.key, 'big.bin'), auth);
      const first = await conn.head();
      conn.pause();
      expect(first.status).toBe(200);
      expect(first.headers['content-length']).toBe(String(SIZE));
      // The next request goes out at once (pipelined): whatever follows the first body on the
      // wire is read as its answer, as a client reusing the connection would.
      conn.send(fileUrl(t.mount.key, 'big.bin'), auth);
      await change?.(file);
      conn.resume();
      const body = await conn.body(SIZE);
      expect(body.stalled, 'a body cut short on a connection left open').toBe(false);
      if (change === null) {
        expect(body.complete).toBe(true);
        expect(body.bytes.equals(content)).toBe(true);
        const second = await conn.head();
        expect(second).toMatchObject({ status: 200, headers: { 'content-length': String(SIZE) } });
        expect((await conn.body(SIZE)).bytes.equals(content)).toBe(true);
      } else {
        // Cut before its last byte: a short body and a closed connection, never a whole-looking
        // body of two versions, never bytes beyond Content-Length.
        expect(body.complete).toBe(false);
        expect(conn.closed).toBe(true);
        expect(body.bytes.equals(content.subarray(0, body.bytes.length))).toBe(true);
        // The file itself downloads whole once it is quiet.
        const now = await readFile(file);
        const again = await download(t.mount.key, 'big.bin');
        expect(again.headers.get('content-length')).toBe(String(now.length));
        expect(Buffer.from(await again.arrayBuffer()).equals(now)).toBe(true);
      }
    } finally {
      conn.close();
    }
  }, 120_000);
});

describe("a download during Filestore's own change of the file (local)", () => {
  // Filestore replaces a file by a rename and deletes by unlinking it: the inode being read
  // keeps its bytes, only its link count and ctime move. The download keeps the old version.
  const SIZE = 4 * MiB;

  it.each<[string, (mountId: string) => Promise<unknown>]>([
    ['overwritten (writeFile over it)', (mountId) => api.server.core.orchestrator.writeFile(mountId, { path: 'kept.bin' }, Readable.from([Buffer.alloc(SIZE, 'N')]))],
    ['replaced by a move of another file over it', async (mountId) => {
      await api.server.core.orchestrator.writeFile(mountId, { path: 'other.bin' }, Readable.from([Buffer.alloc(SIZE, 'M')]));
      return api.server.core.orchestrator.move(mountId, { path: 'other.bin', targetPath: 'kept.bin', overwrite: true });
    }],
    ['deleted', (mountId) => api.server.core.orchestrator.delete(mountId, { path: 'kept.bin' })],
  ])('%s half way: the download completes with the old bytes, exactly Content-Length of them', async (_what, change) => {
    const t = await mountOf('local');
    const old = randomBytes(SIZE);
    await api.server.core.orchestrator.writeFile(t.mount.id, { path: 'kept.bin' }, Readable.from([old]));
    let changed = false;
    useBackend(
      t.mount,
      new LocalExecutor({
        rootPath: t.root as string,
        onRead: async (p, position) => {
          if (p === 'kept.bin' && position >= SIZE / 2 && !changed) {
            changed = true;
            await change(t.mount.id);
          }
        },
      }),
    );
    const res = await download(t.mount.key, 'kept.bin');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(SIZE));
    const body = Buffer.from(await res.arrayBuffer());
    expect(changed).toBe(true);
    expect(body.length).toBe(SIZE);
    expect(body.equals(old)).toBe(true);
  });

  it('rewritten in place with its mtime put back (same size): still cut before the last byte', async () => {
    const t = await mountOf('local');
    const file = path.join(t.root as string, 'torn.bin');
    const old = randomBytes(SIZE);
    await api.server.core.orchestrator.writeFile(t.mount.id, { path: 'torn.bin' }, Readable.from([old]));
    const before = await stat(file);
    useBackend(
      t.mount,
      new LocalExecutor({
        rootPath: t.root as string,
        onRead: async (p, position) => {
          if (p === 'torn.bin' && position >= SIZE / 2 && position < SIZE / 2 + 64 * 1024) {
            await writeFile(file, Buffer.alloc(SIZE, 'B'));
            await utimes(file, before.atime, before.mtime);
          }
        },
      }),
    );
    const res = await download(t.mount.key, 'torn.bin');
    expect(res.headers.get('content-length')).toBe(String(SIZE));
    const got = await res.arrayBuffer().then(
      (b) => Buffer.from(b),
      () => null,
    );
    // A body cut short (fetch reports the cut as an error), never all SIZE bytes of a mix.
    expect(got === null || got.length < SIZE).toBe(true);
  });
});

describe('a catalogued file gone from storage', () => {
  it('a file, or a directory above it, replaced by a symlink outside Filestore is 404 NOT_FOUND, as a file deleted outside it is', async () => {
    const t = await mountOf('local');
    const root = t.root as string;
    for (const p of ['deleted.txt', 'linked.txt', 'dir/inside.txt', 'elsewhere/real.txt']) {
      await api.server.core.orchestrator.writeFile(t.mount.id, { path: p }, Readable.from([Buffer.from(p)]));
    }
    await rm(path.join(root, 'deleted.txt'));
    await rm(path.join(root, 'linked.txt'));
    await symlink(path.join(root, 'elsewhere/real.txt'), path.join(root, 'linked.txt'));
    await rm(path.join(root, 'dir'), { recursive: true });
    await symlink(path.join(root, 'elsewhere'), path.join(root, 'dir'));
    for (const p of ['deleted.txt', 'linked.txt', 'dir/inside.txt']) {
      const e = await expectError(download(t.mount.key, p), 404, 'NOT_FOUND');
      expect(e.message, p).toMatch(/gone from storage/);
    }
  });
});

describe('a pipelined download whose connection is gone', () => {
  it('the client hangs up while the server still prepares its second pipelined answer: that answer\'s file is closed, not held for ever', async () => {
    const t = await mountOf('local');
    const root = t.root as string;
    // Far more than the socket buffers hold: the first answer is still being sent when the second is prepared.
    await api.server.core.orchestrator.writeFile(t.mount.id, { path: 'first.bin' }, Readable.from([randomBytes(32 * MiB)]));
    await api.server.core.orchestrator.writeFile(t.mount.id, { path: 'second.bin' }, Readable.from([randomBytes(MiB)]));
    let entered!: () => void;
    const opening = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    // The second answer's open waits until the client is gone.
    useBackend(
      t.mount,
      new (class extends LocalExecutor {
        override async open(p: string, range?: RangeRequest): Promise<OpenedFile> {
          if (p === 'second.bin') {
            entered();
            await gate;
          }
          return super.open(p, range);
        }
      })({ rootPath: root }),
    );
    const first = path.join(await realpath(root), 'first.bin');
    const second = path.join(await realpath(root), 'second.bin');
    // A handle nobody closes is closed by the garbage collector at some point, with a warning: that is no release.
    const collected: string[] = [];
    const onWarning = (w: Error) => {
      if (/on garbage collection/.test(w.message)) collected.push(w.message);
    };
    process.on('warning', onWarning);
    const auth = { authorization: `Bearer ${api.server.tokens.read}` };
    const conn = await RawConnection.open(c.url);
    try {
      conn.send(fileUrl(t.mount.key, 'first.bin'), auth);
      expect((await conn.head()).status).toBe(200);
      conn.pause();
      conn.send(fileUrl(t.mount.key, 'second.bin'), auth);
      await opening;
      conn.close();
      // The server saw the connection go: the first answer's file is released.
      await eventually(async () => ((await openHandlesOn(first)) === 0 ? true : undefined), 'the first answer to release its file');
      release();
      // The second answer opens its file on a connection already gone: released as well.
      await eventually(async () => ((await openHandlesOn(second)) === 0 ? true : undefined), 'the second answer to release its file');
      expect(collected).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      release();
      conn.close();
    }
  }, 60_000);
});

describe('the ETag of a download', () => {
  it('local: the recorded sha256 only while the file is the version it was recorded for; a weak ETag otherwise, and If-Range holds only for the strong one', async () => {
    const t = await mountOf('local');
    const file = path.join(t.root as string, 'v.txt');
    await c.json('PUT', fileUrl(t.mount.key, 'v.txt'), 200, { body: 'version one' });
    const first = await download(t.mount.key, 'v.txt');
    expect(first.headers.get('etag')).toBe(`"${sha256('version one')}"`);
    await first.text();

    // Rewritten behind Filestore's back, same size: the catalogue has not caught up yet.
    await writeFile(file, 'version two');
    const later = new Date(Date.now() + 60_000);
    await utimes(file, later, later);
    const drifted = await download(t.mount.key, 'v.txt');
    const weak = drifted.headers.get('etag') as string;
    expect(weak).toMatch(/^W\/"[^"]+"$/);
    expect(drifted.headers.get('content-length')).toBe('11');
    expect(await drifted.text()).toBe('version two');

    // A client resuming its copy of the first version gets the new one whole, never a piece
    // to splice onto the old one; a weak tag never satisfies If-Range either.
    for (const ifRange of [`"${sha256('version one')}"`, weak]) {
      const resumed = await download(t.mount.key, 'v.txt', { range: 'bytes=8-', 'if-range': ifRange });
      expect(resumed.status, ifRange).toBe(200);
      expect(resumed.headers.get('content-range')).toBeNull();
      expect(await resumed.text()).toBe('version two');
    }
    // An unsatisfiable range meant for another version is no 416 either.
    const past = await download(t.mount.key, 'v.txt', { range: 'bytes=50-', 'if-range': `"${sha256('version one')}"` });
    expect(past.status).toBe(200);
    expect(await past.text()).toBe('version two');

    // A hash audit records what is there: strong again, and If-Range with it gives the range.
    const job = await c.json<{ id: number }>('POST', '/v1/reconcile', 202, { json: { mountId: t.mount.key, hash: true } });
    await eventually(async () => {
      const j = await c.json<{ status: string }>('GET', `/v1/reconcile/jobs/${job.id}`, 200, { token: 'read' });
      return ['succeeded', 'failed'].includes(j.status) ? j : undefined;
    }, 'the hash audit');
    const strong = `"${sha256('version two')}"`;
    const audited = await download(t.mount.key, 'v.txt');
    expect(audited.headers.get('etag')).toBe(strong);
    await audited.text();
    const ranged = await download(t.mount.key, 'v.txt', { range: 'bytes=8-', 'if-range': strong });
    expect(ranged.status).toBe(206);
    expect(ranged.headers.get('content-range')).toBe('bytes 8-10/11');
    expect(ranged.headers.get('etag')).toBe(strong);
    expect(await ranged.text()).toBe('two');
  });

  it('s3: size, ETag and bytes all come from the one GetObject answer, even when the object is replaced right before it', async () => {
    const server = await sharedS3();
    const proxy = await startS3Proxy(server.endpoint);
    try {
      const bucket = await server.createBucket();
      const mount = await createMount(api.server.core.pool, { key: uniqueKey('s3'), kind: 's3', bucket, prefix: 'tenant/', endpoint: proxy.endpoint, region: 'us-east-1' });
      const v1 = 'the first version';
      await c.json('PUT', fileUrl(mount.key, 'o.txt'), 200, { body: v1 });
      const recorded = await download(mount.key, 'o.txt');
      expect(recorded.headers.get('etag')).toBe(`"${sha256(v1)}"`);
      expect(await recorded.text()).toBe(v1);

      const v2 = 'the second version, longer than the first';
      proxy.beforeForward(async (method, url) => {
        if (method === 'GET' && url.startsWith(`/${bucket}/tenant/o.txt`)) {
          proxy.beforeForward(null);
          await putRawKey(server.client, bucket, 'tenant/o.txt', v2);
        }
      });
      const replaced = await download(mount.key, 'o.txt');
      expect(replaced.status).toBe(200);
      expect(replaced.headers.get('content-length')).toBe(String(v2.length));
      expect(replaced.headers.get('etag')).toMatch(/^W\/"[^"]+"$/);
      expect(await replaced.text()).toBe(v2);

      const ranged = await download(mount.key, 'o.txt', { range: 'bytes=-6' });
      expect(ranged.status).toBe(206);
      expect(ranged.headers.get('content-range')).toBe(`bytes ${v2.length - 6}-${v2.length - 1}/${v2.length}`);
      expect(await ranged.text()).toBe(v2.slice(-6));
    } finally {
      await proxy.stop();
    }
  });
});
