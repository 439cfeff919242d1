import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { expectError, qs, useApiServer } from './support/http.ts';

// HTTP details a client relies on beyond status and code: the headers some errors carry,
// uploads refused early, and where an event stream resumes.

const api = useApiServer('write');
const { c, mountOf } = api;

describe('protocol details', () => {
  it('401 carries WWW-Authenticate: Bearer; 403 names the scope it needs', async () => {
    const res = await c.call('GET', '/v1/mounts', { token: 'none' });
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /);
    await expectError(res, 401, 'UNAUTHENTICATED');
    const forbidden = await expectError(c.call('POST', '/v1/mounts', { json: { kind: 'local', key: 'x', rootPath: '/tmp/x' } }), 403, 'FORBIDDEN');
    expect(forbidden.details).toEqual({ requiredScope: 'filestore:admin' });
  });

  it('a known path with another method is 405 with Allow; an unknown path is 404', async () => {
    const res = await c.call('DELETE', '/v1/mounts');
    expect(res.headers.get('allow')).toBe('GET, POST');
    await expectError(res, 405, 'METHOD_NOT_ALLOWED');
    await expectError(c.call('GET', '/v1/nothing-here'), 404, 'NOT_FOUND');
  });

  it('PUT /v1/files to a path ending in "/" is INVALID_PATH and creates nothing', async () => {
    const t = await mountOf('local');
    await expectError(c.call('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'dir/' })}`, { body: 'x' }), 400, 'INVALID_PATH');
    await expectError(c.call('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'dir' })}`), 404, 'NOT_FOUND');
  });

  it('a large streamed upload refused before its body is read gets its error answer, not a broken connection', async () => {
    const t = await mountOf('local');
    await c.json('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'big.bin' })}`, 200, { body: 'v1' });
    const chunk = Buffer.alloc(1024 * 1024, 7);
    const body = Readable.from((function* () {
      for (let i = 0; i < 24; i++) yield chunk;
    })());
    const res = c.call('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'big.bin' })}`, { body, headers: { 'if-match': '7' } });
    await expectError(res, 409, 'VERSION_MISMATCH');
  });

  it('a stream that drops before its first event resumes from where it opened, missing nothing', async () => {
    const t = await mountOf('local');
    const path = `/v1/events/stream?${qs({ mountId: t.mount.key })}`;
    // Open, read up to the position mark (an SSE message with only an id), and drop.
    const controller = new AbortController();
    const res = await c.call('GET', path, { token: 'read', signal: controller.signal });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let text = '';
    let mark: RegExpExecArray | null = null;
    while (!(mark = /^id: (\d+)$/m.exec(text))) text += new TextDecoder().decode((await reader.read()).value);
    controller.abort();

    await c.json('POST', '/v1/commands/mkdir', 200, { json: { mountId: t.mount.key, path: 'while-away' } });

    const resumed = await openSseFrom(path, Number(mark[1]));
    expect(resumed).toContain('while-away');
  });
});

/** Reads an event stream resumed after `lastId` until a node event arrives; returns the text. */
async function openSseFrom(path: string, lastId: number): Promise<string> {
  const controller = new AbortController();
  const res = await c.call('GET', path, { token: 'read', signal: controller.signal, headers: { 'last-event-id': String(lastId) } });
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  let text = '';
  while (!text.includes('event: filestore.node.created')) text += new TextDecoder().decode((await reader.read()).value);
  controller.abort();
  return text;
}
