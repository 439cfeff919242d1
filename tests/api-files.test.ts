import { randomBytes, randomUUID } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { BackendKind } from './support/filestore.ts';
import { eventually, expectError, qs, sha256, useApiServer, visibleEntries as visible } from './support/http.ts';

// File bytes through PUT/GET /v1/files: streaming, ranges, checksums, optimistic
// concurrency, interrupted uploads.

const api = useApiServer('write');
const { c, mountOf } = api;

const fileUrl = (mountId: string, p: string) => `/v1/files?${qs({ mountId, path: p })}`;
const put = (mountId: string, p: string, body: string | Buffer, headers?: Record<string, string>) =>
  c.json<{ journalEntryId: number; node: { id: number; version: number; sizeBytes: number; sha256: string | null } }>('PUT', fileUrl(mountId, p), 200, {
    body,
    ...(headers ? { headers } : {}),
  });
const download = (mountId: string, p: string, headers?: Record<string, string>) =>
  c.call('GET', fileUrl(mountId, p), { token: 'read', ...(headers ? { headers } : {}) });


/** Files left in Filestore's staging area of a local mount (none after any finished write). */
async function staged(root: string): Promise<string[]> {
  const dir = path.join(root, '.filestore-staging');
  return readdir(dir).catch(() => []);
}

describe.each<BackendKind>(['local', 's3'])('files on a %s mount', (kind) => {
  it('a 5 MiB upload streamed in chunks downloads byte for byte', async () => {
    const t = await mountOf(kind);
    const bytes = randomBytes(5 * 1024 * 1024);
    const digest = sha256(bytes);
    const chunks = function* () {
      for (let i = 0; i < bytes.length; i += 64 * 1024) yield bytes.subarray(i, i + 64 * 1024);
    };
    const r = await c.json<{ node: { sizeBytes: number; sha256: string | null; version: number } }>('PUT', fileUrl(t.mount.key, 'big/blob.bin'), 200, {
      body: Readable.from(chunks()),
    });
    expect(r.node).toMatchObject({ sizeBytes: bytes.length, sha256: digest, version: 1 });
    if (t.root) expect(sha256(await readFile(path.join(t.root, 'big/blob.bin')))).toBe(digest);

    const res = await download(t.mount.key, 'big/blob.bin');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe(String(bytes.length));
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(res.headers.get('etag')).toBe(`"${digest}"`);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(digest);
  });

  it('Range requests answer 206 with the asked bytes; past the end is 416', async () => {
    const t = await mountOf(kind);
    const text = '0123456789abcdefghij';
    await put(t.mount.key, 'r.txt', text);
    const cases: Array<[string, string, string]> = [
      ['bytes=0-9', '0123456789', 'bytes 0-9/20'],
      ['bytes=10-', 'abcdefghij', 'bytes 10-19/20'],
      ['bytes=-5', 'fghij', 'bytes 15-19/20'],
      ['bytes=18-100', 'ij', 'bytes 18-19/20'],
      ['bytes=5-5', '5', 'bytes 5-5/20'],
    ];
    for (const [range, body, contentRange] of cases) {
      const res = await download(t.mount.key, 'r.txt', { range });
      expect(res.status, range).toBe(206);
      expect(res.headers.get('content-range'), range).toBe(contentRange);
      expect(res.headers.get('content-length'), range).toBe(String(body.length));
      expect(res.headers.get('accept-ranges')).toBe('bytes');
      expect(await res.text(), range).toBe(body);
    }
    const whole = await download(t.mount.key, 'r.txt');
    expect(whole.status).toBe(200);
    expect(whole.headers.get('etag')).toBe(`"${sha256(text)}"`);
    expect(whole.headers.get('content-range')).toBeNull();
    expect(await whole.text()).toBe(text);
    await expectError(download(t.mount.key, 'r.txt', { range: 'bytes=20-' }), 416, 'RANGE_NOT_SATISFIABLE');
  });
});

describe('downloads', () => {
  it('a range past the end is 416 with Content-Range: bytes */SIZE (RFC 9110 §15.5.17)', async () => {
    const t = await mountOf();
    await put(t.mount.key, 'r.txt', '0123456789abcdefghij');
    const res = await download(t.mount.key, 'r.txt', { range: 'bytes=25-30' });
    expect(res.status).toBe(416);
    expect(res.headers.get('content-range')).toBe('bytes */20');
  });

  it('a directory is 409 IS_A_DIRECTORY; an unknown path 404 NOT_FOUND; an unknown mount 404 MOUNT_NOT_FOUND', async () => {
    const t = await mountOf();
    await put(t.mount.key, 'dir/f.txt', 'f');
    await expectError(download(t.mount.key, 'dir'), 409, 'IS_A_DIRECTORY');
    await expectError(download(t.mount.key, 'dir/none.txt'), 404, 'NOT_FOUND');
    await expectError(download(`no-such-${randomUUID().slice(0, 8)}`, 'f.txt'), 404, 'MOUNT_NOT_FOUND');
    await expectError(c.call('GET', `/v1/files?${qs({ mountId: t.mount.key })}`, { token: 'read' }), 400, 'VALIDATION_ERROR');
  });
});

describe('uploads', () => {
  it('X-Checksum-Sha256 (hex or base64) that matches is accepted', async () => {
    const t = await mountOf();
    const body = Buffer.from('checked bytes');
    const hex = sha256(body);
    expect((await put(t.mount.key, 'c1.txt', body, { 'x-checksum-sha256': hex })).node.sha256).toBe(hex);
    const b64 = Buffer.from(hex, 'hex').toString('base64');
    expect((await put(t.mount.key, 'c2.txt', body, { 'x-checksum-sha256': b64 })).node.sha256).toBe(hex);
    await expectError(c.call('PUT', fileUrl(t.mount.key, 'c3.txt'), { body, headers: { 'x-checksum-sha256': 'not-a-digest' } }), 400, 'VALIDATION_ERROR');
  });

  it.each<BackendKind>(['local', 's3'])('a wrong X-Checksum-Sha256 is 422 CHECKSUM_MISMATCH and leaves nothing behind (%s)', async (kind) => {
    const t = await mountOf(kind);
    const wrong = sha256('something else');
    await expectError(c.call('PUT', fileUrl(t.mount.key, 'new/bad.txt'), { body: 'payload', headers: { 'x-checksum-sha256': wrong } }), 422, 'CHECKSUM_MISMATCH');
    await expectError(download(t.mount.key, 'new/bad.txt'), 404, 'NOT_FOUND');
    // An existing file keeps its bytes and version.
    await put(t.mount.key, 'keep.txt', 'original');
    await expectError(c.call('PUT', fileUrl(t.mount.key, 'keep.txt'), { body: 'replacement', headers: { 'x-checksum-sha256': wrong } }), 422, 'CHECKSUM_MISMATCH');
    const res = await download(t.mount.key, 'keep.txt');
    expect(res.headers.get('x-filestore-version')).toBe('1');
    expect(await res.text()).toBe('original');
    if (t.root) {
      expect(await visible(t.root)).toEqual(['keep.txt']);
      expect(await staged(t.root)).toEqual([]);
    }
    const files = await c.json<{ items: Array<{ path: string }> }>('GET', `/v1/nodes?${qs({ mountId: t.mount.key, kind: 'file' })}`, 200);
    expect(files.items.map((n) => n.path)).toEqual(['keep.txt']);
  });

  it('If-Match: 0 means "must not exist"; If-Match: N must be the current version (409 VERSION_MISMATCH)', async () => {
    const t = await mountOf();
    const v1 = await put(t.mount.key, 'v.txt', 'one', { 'if-match': '0' });
    expect(v1.node.version).toBe(1);
    await expectError(c.call('PUT', fileUrl(t.mount.key, 'v.txt'), { body: 'two', headers: { 'if-match': '0' } }), 409, 'VERSION_MISMATCH');
    await expectError(c.call('PUT', fileUrl(t.mount.key, 'v.txt'), { body: 'two', headers: { 'if-match': '7' } }), 409, 'VERSION_MISMATCH');
    expect(await readFile(path.join(t.root as string, 'v.txt'), 'utf8')).toBe('one');
    const v2 = await put(t.mount.key, 'v.txt', 'two', { 'if-match': '1' });
    expect(v2.node.version).toBe(2);
    await expectError(c.call('PUT', fileUrl(t.mount.key, 'v.txt'), { body: 'three', headers: { 'if-match': '1' } }), 409, 'VERSION_MISMATCH');
    await expectError(c.call('PUT', fileUrl(t.mount.key, 'w.txt'), { body: 'w', headers: { 'if-match': '1' } }), 409, 'VERSION_MISMATCH');
    expect(await readFile(path.join(t.root as string, 'v.txt'), 'utf8')).toBe('two');
    expect(await visible(t.root as string)).toEqual(['v.txt']);
    await expectError(c.call('PUT', fileUrl(t.mount.key, 'v.txt'), { body: 'x', headers: { 'if-match': 'W/"x"' } }), 400, 'VALIDATION_ERROR');
  });

  it('an empty body creates an empty file; PUT onto a directory is 409 IS_A_DIRECTORY', async () => {
    const t = await mountOf();
    const r = await put(t.mount.key, 'empty.txt', '');
    expect(r.node).toMatchObject({ sizeBytes: 0, sha256: sha256('') });
    expect((await stat(path.join(t.root as string, 'empty.txt'))).size).toBe(0);
    await put(t.mount.key, 'd/f.txt', 'f');
    await expectError(c.call('PUT', fileUrl(t.mount.key, 'd'), { body: 'x' }), 409, 'IS_A_DIRECTORY');
  });

  it('of concurrent writes with the same If-Match exactly one wins; the others are 409 VERSION_MISMATCH', async () => {
    const t = await mountOf();
    await put(t.mount.key, 'race.txt', 'v1');
    const bodies = ['w1', 'w2', 'w3', 'w4', 'w5'];
    const responses = await Promise.all(bodies.map((b) => c.call('PUT', fileUrl(t.mount.key, 'race.txt'), { body: b, headers: { 'if-match': '1' } })));
    const winners = responses.filter((r) => r.status === 200);
    expect(winners).toHaveLength(1);
    for (const r of responses.filter((x) => x.status !== 200)) await expectError(r, 409, 'VERSION_MISMATCH');
    const won = ((await (winners[0] as Response).json()) as { node: { version: number; sha256: string } }).node;
    expect(won.version).toBe(2);
    const onDisk = await readFile(path.join(t.root as string, 'race.txt'), 'utf8');
    expect(sha256(onDisk)).toBe(won.sha256);
    expect((await download(t.mount.key, 'race.txt')).headers.get('x-filestore-version')).toBe('2');
  });

  it('an upload cut off by the client leaves no file, no node and no staged bytes', async () => {
    const t = await mountOf();
    const root = t.root as string;
    const controller = new AbortController();
    let sent = 0;
    // Sends 1 MiB, then stalls until the connection is dropped.
    const body = new Readable({
      read() {
        if (sent < 16) {
          sent++;
          this.push(Buffer.alloc(64 * 1024, 7));
        }
      },
    });
    const outcome = c.call('PUT', fileUrl(t.mount.key, 'cut.bin'), { body, signal: controller.signal }).then(
      (r) => r.status,
      (e: Error) => e.name,
    );
    type Entry = { status: string; request: { path?: string } };
    const entriesOfCut = async () =>
      (await c.json<{ items: Entry[] }>('GET', `/v1/journal?${qs({ mountId: t.mount.key })}`, 200, { token: 'read' })).items.filter((e) => e.request.path === 'cut.bin');
    await eventually(async () => ((await entriesOfCut()).some((e) => e.status === 'pending') ? true : undefined), 'the upload to start');
    controller.abort();
    expect(await outcome).toBe('AbortError');
    const entries = await eventually(async () => {
      const es = await entriesOfCut();
      return es.every((e) => e.status !== 'pending') ? es : undefined;
    }, 'the cut upload to be journaled as finished');
    expect(entries.map((e) => e.status)).toEqual(['failed']);
    await expectError(download(t.mount.key, 'cut.bin'), 404, 'NOT_FOUND');
    expect(await visible(root)).toEqual([]);
    await eventually(async () => ((await staged(root)).length === 0 ? true : undefined), 'staged bytes to be removed');
    // The mount still takes writes to that path.
    await put(t.mount.key, 'cut.bin', 'whole');
  });
});
