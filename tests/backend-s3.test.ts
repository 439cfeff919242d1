import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3Executor, type S3ExecutorOptions } from '../shared/backends/s3/s3-executor.ts';
import type { Backend } from '../shared/backends/types.ts';
import {
  backendConformanceSuite,
  bodyOf,
  collect,
  expectCode,
  generatedBody,
  readAll,
  sha256,
  type BackendFixture,
} from './conformance/backend-suite.ts';
import { emptyBucket, getRawKey, putRawKey, rawKeys, startS3, TEST_S3_CREDENTIALS, type TestS3 } from './support/s3.ts';
import { startS3Proxy, type S3Proxy } from './support/s3-proxy.ts';

const MiB = 1024 * 1024;

let s3: TestS3;
let s3Ready: Promise<TestS3> | undefined;
/** One emulator per test file, started by whichever hook needs it first. */
const emulator = (): Promise<TestS3> => (s3Ready ??= startS3().then((started) => (s3 = started)));

beforeAll(async () => {
  await emulator();
});
afterAll(async () => {
  await s3?.stop();
});

/** A bucket of its own, an executor on it (optionally through a proxy) and raw access by path. */
async function s3Fixture(prefix: string, options: Partial<S3ExecutorOptions> & { endpoint?: string } = {}) {
  const server = await emulator();
  const bucket = await server.createBucket();
  const backend = new S3Executor({
    bucket,
    prefix,
    endpoint: server.endpoint,
    region: 'us-east-1',
    credentials: TEST_S3_CREDENTIALS,
    ...options,
  });
  const key = (path: string) => prefix + path;
  return {
    bucket,
    backend,
    key,
    putRaw: (path: string, bytes: Buffer | string) => putRawKey(server.client, bucket, key(path), bytes),
    getRaw: (path: string) => getRawKey(server.client, bucket, key(path)),
    keys: () => rawKeys(server.client, bucket),
    cleanup: () => emptyBucket(server.client, bucket),
  };
}

const toFixture = async (prefix: string): Promise<BackendFixture> => {
  const f = await s3Fixture(prefix);
  return { backend: f.backend, putRaw: f.putRaw, getRaw: f.getRaw, cleanup: f.cleanup };
};

backendConformanceSuite('s3 (whole bucket)', () => toFixture(''));
backendConformanceSuite('s3 (mount prefix)', () => toFixture('tenant1/'));

const write = (backend: Backend, path: string, bytes: Buffer | string) =>
  backend.writeFile(path, bodyOf(bytes), { stagingId: randomUUID() });
const paths = async (backend: Backend, dir: string, recursive = true) =>
  (await collect(backend.list(dir, { recursive }))).map((e) => e.path);

/** Runs `task` over 0..n-1 with `limit` in flight (bulk out-of-band setup). */
async function times(n: number, limit: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

describe('S3 backend', () => {
  describe('mount prefix', () => {
    it('keeps every key a command writes under the mount prefix and sees nothing outside it', async () => {
      const f = await s3Fixture('tenant1/');
      const server = await emulator();
      await putRawKey(server.client, f.bucket, 'outside.txt', 'o');
      await putRawKey(server.client, f.bucket, 'tenant1-other/x.txt', 'o');
      await putRawKey(server.client, f.bucket, 'tenant2/y.txt', 'o');

      await write(f.backend, 'docs/a.txt', 'a');
      await f.backend.mkdir('empty/inner', { parents: true });
      await f.backend.copy('docs', 'docs-copy', { overwrite: false });
      await f.backend.move('docs-copy/a.txt', 'moved.txt', { overwrite: false });
      await f.backend.delete('docs-copy', { recursive: true });

      const mine = (await f.keys()).filter((k) => k.startsWith('tenant1/'));
      expect(mine.sort()).toEqual(['tenant1/docs/a.txt', 'tenant1/empty/', 'tenant1/empty/inner/', 'tenant1/moved.txt']);
      expect(await paths(f.backend, '')).toEqual(['docs', 'docs/a.txt', 'empty', 'empty/inner', 'moved.txt']);
      expect(await f.backend.stat('outside.txt')).toBeNull();
      expect(await getRawKey(server.client, f.bucket, 'tenant2/y.txt')).toEqual(Buffer.from('o'));
    });

    it('"tenant1", "/tenant1/" and "tenant1/" name the same prefix', async () => {
      const f = await s3Fixture('tenant1/');
      await f.putRaw('x.txt', 'x');
      for (const prefix of ['tenant1', '/tenant1/']) {
        const other = new S3Executor({ bucket: f.bucket, prefix, endpoint: s3.endpoint, credentials: TEST_S3_CREDENTIALS });
        expect(await paths(other, '')).toEqual(['x.txt']);
      }
    });
  });

  describe('existence', () => {
    it('a file exists only by its exact key: "ab" and "a.txt" do not make "a" exist', async () => {
      const f = await s3Fixture('');
      await f.putRaw('ab', 'x');
      await f.putRaw('a.txt', 'x');
      expect(await f.backend.stat('a')).toBeNull();
      await expectCode(f.backend.read('a'), 'NOT_FOUND');
      await expectCode(f.backend.delete('a', { recursive: true }), 'NOT_FOUND');
      expect(await f.backend.stat('ab')).toMatchObject({ kind: 'file', sizeBytes: 1 });
    });

    it('a directory exists by its marker alone or by any key below it', async () => {
      const f = await s3Fixture('');
      await f.putRaw('marked/', '');
      await f.putRaw('implicit/deep/file.txt', 'x');
      expect(await f.backend.stat('marked')).toMatchObject({ kind: 'directory', mtime: null });
      expect(await f.backend.stat('implicit')).toMatchObject({ kind: 'directory' });
      expect(await f.backend.stat('implicit/deep')).toMatchObject({ kind: 'directory' });
      expect(await f.backend.stat('implicit/dee')).toBeNull();
    });

    it('when a file key "a" and keys under "a/" coexist, "a" is the file and its shadowed subtree is not listed', async () => {
      const f = await s3Fixture('');
      await f.putRaw('a', 'file');
      await f.putRaw('a/x', 'hidden');
      await f.putRaw('a-b', 'y');
      expect(await f.backend.stat('a')).toMatchObject({ kind: 'file', sizeBytes: 4 });
      expect(await paths(f.backend, '')).toEqual(['a', 'a-b']);
      expect(await paths(f.backend, '', false)).toEqual(['a', 'a-b']);
      await expectCode(collect(f.backend.list('a')), 'NOT_A_DIRECTORY');
      await expectCode(write(f.backend, 'a/y', 'z'), 'NOT_A_DIRECTORY');
    });
  });

  describe('directory markers', () => {
    it('mkdir writes zero-byte "dir/" markers for the target and for ancestors that had no keys', async () => {
      const f = await s3Fixture('m/');
      await f.putRaw('p/existing.txt', 'x');
      await f.backend.mkdir('p/q/r', { parents: true });
      expect((await f.keys()).sort()).toEqual(['m/p/existing.txt', 'm/p/q/', 'm/p/q/r/']);
      expect(await f.getRaw('p/q/r/')).toEqual(Buffer.alloc(0));
    });

    it('a marker is listed as its directory, never as a file', async () => {
      const f = await s3Fixture('');
      await f.putRaw('d/', '');
      await f.putRaw('d/sub/', '');
      await f.putRaw('d/sub/f.txt', 'x');
      const entries = await collect(f.backend.list('', { recursive: true }));
      expect(entries.map((e) => [e.path, e.kind])).toEqual([
        ['d', 'directory'],
        ['d/sub', 'directory'],
        ['d/sub/f.txt', 'file'],
      ]);
      expect(await paths(f.backend, 'd', false)).toEqual(['d/sub']);
    });

    it('a directory stays visible when its last file is deleted or moved away', async () => {
      const f = await s3Fixture('');
      await f.putRaw('keep/only.txt', 'x');
      await f.putRaw('keep2/only.txt', 'x');
      await f.backend.delete('keep/only.txt', { recursive: false });
      await f.backend.move('keep2/only.txt', 'elsewhere.txt', { overwrite: false });
      expect(await f.backend.stat('keep')).toMatchObject({ kind: 'directory' });
      expect(await f.backend.stat('keep2')).toMatchObject({ kind: 'directory' });
      expect(await paths(f.backend, '')).toEqual(['elsewhere.txt', 'keep', 'keep2']);
    });

    it('deleting an empty directory without recursive removes its marker', async () => {
      const f = await s3Fixture('');
      await f.backend.mkdir('hollow', { parents: false });
      await f.backend.delete('hollow', { recursive: false });
      expect(await f.keys()).toEqual([]);
    });
  });

  describe('listing', () => {
    it('skips the staging area and keys that are no canonical path', async () => {
      const f = await s3Fixture('');
      await f.putRaw('.filestore-staging/leftover.abc', 'x');
      await f.putRaw('ok.txt', 'x');
      await f.putRaw('bad//double.txt', 'x');
      await f.putRaw('cafe\u0301.txt', 'x'); // NFD: not the canonical (NFC) form of a path
      expect(await paths(f.backend, '')).toEqual(['bad', 'ok.txt']);
      expect(await paths(f.backend, '', false)).toEqual(['bad', 'ok.txt']);
    });

    it('keeps the staging area hidden when the listing has to probe for directories', async () => {
      const f = await s3Fixture('');
      await f.putRaw('.filestore-staging/cmd.0011', 'x');
      // More than 1,000 held entries that the staging directory would have to precede.
      await times(1001, 32, (i) => f.putRaw(`.filestore-staging-${i}`, 'x'));
      const listed = await paths(f.backend, '');
      expect(listed).toHaveLength(1001);
      expect(listed).not.toContain('.filestore-staging');
    });

    it('emits a directory before siblings that S3 lists earlier, across page boundaries', async () => {
      const f = await s3Fixture('');
      // 1,200 "a-NNNN" keys fill more than one ListObjectsV2 page and all sort before "a/",
      // which is where S3 reveals the directory "a".
      await times(1200, 32, (i) => f.putRaw(`a-${String(i).padStart(4, '0')}`, 'x'));
      await f.putRaw('a/x', 'x');
      await f.putRaw('a0', 'x');
      for (const recursive of [true, false]) {
        const listed = await paths(f.backend, '', recursive);
        expect(listed[0]).toBe('a');
        expect(listed[1]).toBe('a-0000');
        expect(listed.slice(-2)).toEqual(recursive ? ['a/x', 'a0'] : ['a-1199', 'a0']);
        expect(listed.length).toBe(recursive ? 1203 : 1202);
      }
    });

    it('a delimited listing whose pages mix files and directories lists each entry once, in path order', async () => {
      const f = await s3Fixture('');
      // S3 order: "d0000.txt", "d0000/", "d0001.txt", "d0001/", … so pages end on either kind.
      await times(700, 32, async (i) => {
        const name = `d${String(i).padStart(4, '0')}`;
        await f.putRaw(`${name}.txt`, 'x');
        await f.putRaw(`${name}/inner.txt`, 'x');
      });
      const listed = await paths(f.backend, '', false);
      expect(listed).toHaveLength(1400);
      expect(listed.slice(0, 4)).toEqual(['d0000', 'd0000.txt', 'd0001', 'd0001.txt']);
      expect(new Set(listed).size).toBe(1400);
    });

    it('lists 2,500 keys across pages, recursively and as direct children', async () => {
      const f = await s3Fixture('big/');
      await times(2500, 32, (i) => f.putRaw(`many/f${String(i).padStart(5, '0')}.txt`, 'x'));
      const recursive = await paths(f.backend, '');
      expect(recursive.length).toBe(2501);
      expect(recursive[0]).toBe('many');
      expect(recursive[2500]).toBe('many/f02499.txt');
      expect(await paths(f.backend, 'many', false)).toHaveLength(2500);
    });
  });

  describe('delete', () => {
    it('a recursive delete of 2,500 keys uses batched DeleteObjects of at most 1,000 keys', async () => {
      const server = await emulator();
      const proxy = await startS3Proxy(server.endpoint);
      try {
        const f = await s3Fixture('', { endpoint: proxy.endpoint });
        await times(2500, 32, (i) => f.putRaw(`bulk/${i % 10}/f${i}.bin`, 'x'));
        await f.putRaw('bulk-sibling.txt', 'kept');
        const before = proxy.requests.length;
        await f.backend.delete('bulk', { recursive: true });
        const deletes = proxy.requests.slice(before).filter((r) => r.method === 'POST' && /[?&]delete/.test(r.url));
        expect(deletes).toHaveLength(3);
        expect(await f.keys()).toEqual(['bulk-sibling.txt']);
      } finally {
        await proxy.stop();
      }
    });
  });

  describe('writes', () => {
    it('streams 20 MB as a multipart upload with 5 MiB parts and records the sha256 as object metadata', async () => {
      const server = await emulator();
      const proxy = await startS3Proxy(server.endpoint);
      try {
        const f = await s3Fixture('t/', { endpoint: proxy.endpoint, partSizeBytes: 5 * MiB });
        const size = 20 * 1000 * 1000;
        const { body, sha256: expected } = generatedBody(size, 3);
        const result = await f.backend.writeFile('big.bin', body, { stagingId: 'cmd-1' });
        expect(result).toMatchObject({ kind: 'file', sizeBytes: size, sha256: await expected, mode: null });
        expect(result.etag).not.toMatch(/"/);
        const parts = proxy.requests.filter((r) => r.method === 'PUT' && /partNumber=/.test(r.url));
        expect(parts).toHaveLength(4);
        const head = await server.client.send(new HeadObjectCommand({ Bucket: f.bucket, Key: 't/big.bin' }));
        expect(head.Metadata?.sha256).toBe(await expected);
        expect((await f.backend.hash('big.bin'))?.sha256).toBe(await expected);
        // The staging object is gone once the write is done.
        expect(await f.keys()).toEqual(['t/big.bin']);
      } finally {
        await proxy.stop();
      }
    }, 60_000);

    it('a body that fails mid-stream rejects and leaves neither the target nor a staging object', async () => {
      const f = await s3Fixture('');
      await f.putRaw('target.txt', 'old');
      async function* failing(): AsyncGenerator<Buffer> {
        yield Buffer.alloc(1024, 1);
        throw new Error('client went away');
      }
      await expect(f.backend.writeFile('target.txt', Readable.from(failing()), { stagingId: 'cmd-2' })).rejects.toThrow(
        'client went away',
      );
      expect(await f.getRaw('target.txt')).toEqual(Buffer.from('old'));
      expect(await f.keys()).toEqual(['target.txt']);
    });

    it('refuses a staging id outside [A-Za-z0-9_-] with VALIDATION_ERROR', async () => {
      const f = await s3Fixture('');
      await expectCode(f.backend.writeFile('x', bodyOf('x'), { stagingId: '../evil' }), 'VALIDATION_ERROR');
    });

    it('discardStaging removes the staging objects of that id only', async () => {
      const f = await s3Fixture('p/');
      await f.putRaw('.filestore-staging/cmd-9.0011223344556677', 'left over');
      await f.putRaw('.filestore-staging/cmd-90.8899aabbccddeeff', 'another command');
      await f.backend.discardStaging('cmd-9');
      expect(await f.keys()).toEqual(['p/.filestore-staging/cmd-90.8899aabbccddeeff']);
    });
  });

  describe('discardStaging with multipart uploads', () => {
    // fauxqs 1.x has no ListMultipartUploads (GET ?uploads is answered as an object listing), so
    // the abort path runs against a scripted client that answers like S3 does.
    function scriptedClient(uploads: Array<{ Key: string; UploadId: string }>, listing: 'ok' | 'not-implemented') {
      const aborted: string[] = [];
      const client = {
        async send(command: unknown) {
          if (command instanceof ListObjectsV2Command) return { Contents: [], IsTruncated: false };
          if (command instanceof ListMultipartUploadsCommand) {
            if (listing === 'not-implemented') {
              throw Object.assign(new Error('not implemented'), { name: 'NotImplemented', $metadata: { httpStatusCode: 501 } });
            }
            const prefix = command.input.Prefix ?? '';
            return { Uploads: uploads.filter((u) => u.Key.startsWith(prefix)), IsTruncated: false };
          }
          if (command instanceof AbortMultipartUploadCommand) {
            aborted.push(`${command.input.Key}#${command.input.UploadId}`);
            return {};
          }
          throw new Error(`unexpected command ${String((command as object).constructor.name)}`);
        },
      };
      return { client: client as unknown as S3Client, aborted };
    }

    it('aborts the in-progress multipart uploads of that staging id only', async () => {
      const { client, aborted } = scriptedClient(
        [
          { Key: 'p/.filestore-staging/cmd-7.00aa', UploadId: 'u1' },
          { Key: 'p/.filestore-staging/cmd-70.00bb', UploadId: 'u2' },
          { Key: 'p/cmd-7.00aa', UploadId: 'u3' },
        ],
        'ok',
      );
      await new S3Executor({ bucket: 'b', prefix: 'p', client }).discardStaging('cmd-7');
      expect(aborted).toEqual(['p/.filestore-staging/cmd-7.00aa#u1']);
    });

    it('is a no-op for uploads on a server without ListMultipartUploads', async () => {
      const { client, aborted } = scriptedClient([], 'not-implemented');
      await new S3Executor({ bucket: 'b', client }).discardStaging('cmd-7');
      expect(aborted).toEqual([]);
    });
  });

  describe('copy', () => {
    it('copies objects above the multipart threshold with UploadPartCopy and keeps their metadata', async () => {
      const server = await emulator();
      const proxy = await startS3Proxy(server.endpoint);
      try {
        const f = await s3Fixture('', {
          endpoint: proxy.endpoint,
          multipartCopyThresholdBytes: 5 * MiB,
          copyPartSizeBytes: 5 * MiB,
        });
        const { body, sha256: expected } = generatedBody(12 * MiB, 5);
        await f.backend.writeFile('src/big.bin', body, { stagingId: 'cmd-3' });
        const copiesAfterWrite = proxy.partCopies; // the write's own staging → target copy
        await f.backend.copy('src', 'dst', { overwrite: false });
        expect(proxy.partCopies - copiesAfterWrite).toBe(3); // 5 + 5 + 2 MiB
        expect((await f.backend.hash('dst/big.bin'))?.sha256).toBe(await expected);
        const head = await server.client.send(new HeadObjectCommand({ Bucket: f.bucket, Key: 'dst/big.bin' }));
        expect(head.Metadata?.sha256).toBe(await expected);
      } finally {
        await proxy.stop();
      }
    }, 60_000);
  });

  describe('throttling', () => {
    it('retries 503 SlowDown with backoff until S3 accepts the request', async () => {
      const server = await emulator();
      const proxy = await startS3Proxy(server.endpoint);
      try {
        const f = await s3Fixture('');
        const throttledBackend = new S3Executor({
          bucket: f.bucket,
          endpoint: proxy.endpoint,
          credentials: TEST_S3_CREDENTIALS,
        });
        proxy.throttleNext(2);
        const result = await write(throttledBackend, 'slow.txt', 'patience');
        expect(result.sha256).toBe(sha256('patience'));
        expect(proxy.throttled).toBe(2);
        expect(await f.getRaw('slow.txt')).toEqual(Buffer.from('patience'));
      } finally {
        await proxy.stop();
      }
    }, 30_000);

    it('gives up after maxAttempts with STORAGE_ERROR naming SlowDown', async () => {
      const server = await emulator();
      const proxy = await startS3Proxy(server.endpoint);
      try {
        const f = await s3Fixture('', { endpoint: proxy.endpoint, maxAttempts: 2 });
        proxy.throttleNext(10);
        // A listing, not a HEAD: HEAD responses carry no body, so no error code either.
        await expect(collect(f.backend.list(''))).rejects.toMatchObject({
          code: 'STORAGE_ERROR',
          details: { s3Error: 'SlowDown', httpStatus: 503 },
        });
        expect(proxy.throttled).toBe(2);
      } finally {
        await proxy.stop();
      }
    }, 30_000);
  });

  describe('errors', () => {
    it('a missing bucket is STORAGE_ERROR, and no error carries the credentials', async () => {
      const secret = { accessKeyId: 'AKIDEXAMPLESECRET', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };
      const backend = new S3Executor({ bucket: 'no-such-bucket', endpoint: s3.endpoint, credentials: secret });
      const err = await backend.stat('x').then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'STORAGE_ERROR', details: { s3Error: 'NoSuchBucket' } });
      const shown = JSON.stringify(err) + String((err as Error).message);
      expect(shown).not.toContain(secret.accessKeyId);
      expect(shown).not.toContain(secret.secretAccessKey);
    });

    it('an empty byte range of an existing file reads as no bytes, and an invalid range is VALIDATION_ERROR', async () => {
      const f = await s3Fixture('');
      await f.putRaw('empty.txt', '');
      await f.putRaw('short.txt', 'abc');
      expect((await readAll(await f.backend.read('empty.txt', { start: 0 }))).length).toBe(0);
      expect((await readAll(await f.backend.read('short.txt', { start: 10 }))).length).toBe(0);
      await expectCode(f.backend.read('short.txt', { start: 2, end: 1 }), 'VALIDATION_ERROR');
    });
  });
});
