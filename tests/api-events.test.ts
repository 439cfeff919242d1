import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { eventsAfter } from '../shared/catalogue/outbox.ts';
import { eventually, expectError, openSse, qs, useApiServer, type SseEvent, type SseReader } from './support/http.ts';

// GET /v1/events/stream: Server-Sent Events whose ids are outbox sequence numbers, filtered
// by mount and type, resumable with Last-Event-ID after a dropped connection.

const api = useApiServer('write');
const { c, mountOf } = api;
const open: SseReader[] = [];
afterEach(() => {
  for (const r of open.splice(0)) r.abort();
});

async function stream(params: Record<string, string | number | undefined>, headers?: Record<string, string>): Promise<SseReader> {
  const r = await openSse(c, `/v1/events/stream?${qs(params)}`, { token: 'read', ...(headers ? { headers } : {}) });
  open.push(r);
  expect(r.response.status).toBe(200);
  expect(r.response.headers.get('content-type')).toMatch(/^text\/event-stream/);
  return r;
}

const put = (mountId: string, p: string, body: string) =>
  c.json<{ journalEntryId: number }>('PUT', `/v1/files?${qs({ mountId, path: p })}`, 200, { body });
const command = (name: string, body: Record<string, unknown>) => c.json<{ journalEntryId: number }>('POST', `/v1/commands/${name}`, 200, { json: body });

const completions = (events: SseEvent[], mountId?: string) =>
  events.filter((e) => e.event === 'filestore.command.completed' && (mountId === undefined || e.data.mountId === mountId));
const completed = (n: number, mountId?: string) => (events: SseEvent[]) => completions(events, mountId).length >= n;

function expectIncreasingIds(events: SseEvent[]) {
  for (const e of events) {
    expect(Number.isInteger(e.id) && e.id > 0, `id ${e.id}`).toBe(true);
    expect(e.id).toBe(e.data.seq);
    expect(e.event).toBe(e.data.type);
  }
  const ids = events.map((e) => e.id);
  expect(ids).toEqual([...ids].sort((a, b) => a - b));
  expect(new Set(ids).size).toBe(ids.length);
}

describe('event stream', () => {
  it("a command's events arrive with increasing integer ids and the event type as the SSE event", async () => {
    const t = await mountOf();
    const s = await stream({ mountId: t.mount.key });
    const results = [
      await command('mkdir', { mountId: t.mount.key, path: 'd' }),
      await put(t.mount.key, 'd/a.txt', 'a'),
      await put(t.mount.key, 'd/a.txt', 'aa'),
      await command('move', { mountId: t.mount.key, path: 'd/a.txt', targetPath: 'd/b.txt' }),
      await command('copy', { mountId: t.mount.key, path: 'd/b.txt', targetPath: 'c.txt' }),
      await command('delete', { mountId: t.mount.key, path: 'd', recursive: true }),
    ];
    const events = await s.until(completed(6));
    expectIncreasingIds(events);
    expect(events.map((e) => e.event)).toEqual([
      'filestore.node.created', 'filestore.command.completed',
      'filestore.node.created', 'filestore.command.completed',
      'filestore.node.updated', 'filestore.command.completed',
      'filestore.node.moved', 'filestore.command.completed',
      'filestore.node.copied', 'filestore.command.completed',
      'filestore.node.deleted', 'filestore.command.completed',
    ]);
    expect(events.every((e) => e.data.mountId === t.mount.id && typeof e.data.id === 'string' && !Number.isNaN(Date.parse(e.data.occurredAt)))).toBe(true);
    expect(completions(events).map((e) => e.data.data.journalEntryId)).toEqual(results.map((r) => r.journalEntryId));
    expect(events[6]?.data.data).toMatchObject({ from: 'd/a.txt', to: 'd/b.txt' });
  });

  it('filters by mount (id or key) and by types', async () => {
    const a = await mountOf();
    const b = await mountOf();
    const createdOrDeletedOfA = await stream({ mountId: a.mount.id, types: 'filestore.node.created,filestore.node.deleted' });
    const allOfA = await stream({ mountId: a.mount.key });
    const completedAnywhere = await stream({ types: 'filestore.command.completed' });
    await command('mkdir', { mountId: a.mount.key, path: 'x' });
    await command('mkdir', { mountId: b.mount.key, path: 'x' });
    await put(b.mount.key, 'x/f.txt', 'b');
    await put(a.mount.key, 'x/f.txt', 'a');
    await command('delete', { mountId: b.mount.key, path: 'x', recursive: true });
    await command('delete', { mountId: a.mount.key, path: 'x/f.txt' });

    // Events arrive in sequence order, so once A's last event is in, nothing earlier is still coming.
    const filtered = await createdOrDeletedOfA.until((es) => es.some((e) => e.event === 'filestore.node.deleted'));
    expect(filtered.map((e) => [e.event, e.data.mountId])).toEqual([
      ['filestore.node.created', a.mount.id],
      ['filestore.node.created', a.mount.id],
      ['filestore.node.deleted', a.mount.id],
    ]);
    expectIncreasingIds(filtered);
    const all = await allOfA.until(completed(3));
    expect(all.every((e) => e.data.mountId === a.mount.id)).toBe(true);
    expect(all).toHaveLength(6);
    // Without a mount filter every mount's events come (other tests' too): only the type is filtered.
    const done = await completedAnywhere.until((es) => completions(es, a.mount.id).length >= 3 && completions(es, b.mount.id).length >= 3);
    expect(done.every((e) => e.event === 'filestore.command.completed')).toBe(true);
    expectIncreasingIds(done);
    const ours = done.filter((e) => e.data.mountId === a.mount.id || e.data.mountId === b.mount.id).map((e) => e.data.mountId);
    expect(ours).toEqual([a.mount.id, b.mount.id, b.mount.id, a.mount.id, b.mount.id, a.mount.id]);
    // The same filtered events, after the fact, are the ones the catalogue recorded.
    expect(filtered.map((e) => e.id)).toEqual(all.filter((e) => e.event !== 'filestore.command.completed' && e.event !== 'filestore.node.updated').map((e) => e.id));
  });

  it('a stream opened after every other one closed starts with the next event, not those published while nobody listened', async () => {
    const t = await mountOf();
    const first = await stream({ mountId: t.mount.key });
    await command('mkdir', { mountId: t.mount.key, path: 'before' });
    await first.until(completed(1));
    first.abort();
    await command('mkdir', { mountId: t.mount.key, path: 'unheard' });
    // Published (not only committed) before the next stream opens.
    await eventually(async () => {
      const { rows } = await api.server.core.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM filestore.outbox WHERE mount_id = $1 AND published_at IS NULL', [t.mount.id]);
      return rows[0]?.n === 0 ? true : undefined;
    }, 'the events of "unheard" published');
    const second = await stream({ mountId: t.mount.key });
    await command('mkdir', { mountId: t.mount.key, path: 'after' });
    const events = await second.until(completed(1));
    expect(events.map((e) => [e.event, (e.data.data.node as { path?: string } | undefined)?.path ?? null])).toEqual([
      ['filestore.node.created', 'after'],
      ['filestore.command.completed', null],
    ]);
    expectIncreasingIds(events);
  });

  it('resumes after a dropped connection with Last-Event-ID: every missed event exactly once, in order', async () => {
    const t = await mountOf();
    const key = t.mount.key;
    const first = await stream({ mountId: key });
    await command('mkdir', { mountId: key, path: 'r' });
    await put(key, 'r/one.txt', '1');
    const seen = await first.until(completed(2));
    const lastSeen = seen[seen.length - 1]?.id as number;
    first.abort();

    // While disconnected.
    await put(key, 'r/two.txt', '2');
    await command('move', { mountId: key, path: 'r/two.txt', targetPath: 'r/three.txt' });
    await command('delete', { mountId: key, path: 'r/one.txt' });
    await command('mkdir', { mountId: key, path: 'r/sub' });
    await c.json('PATCH', `/v1/nodes/${(await c.json<{ id: number }>('GET', `/v1/nodes/by-path?${qs({ mountId: key, path: 'r/three.txt' })}`, 200)).id}/metadata`, 200, {
      json: { set: { k: 'v' } },
    });

    const second = await stream({ mountId: key }, { 'last-event-id': String(lastSeen) });
    await second.until(completed(5));
    // And the live tail continues after the replay, across the seam.
    await command('mkdir', { mountId: key, path: 'r/live' });
    const resumed = await second.until(completed(6));

    expectIncreasingIds(resumed);
    expect(resumed.every((e) => e.id > lastSeen)).toBe(true);
    expect(resumed.map((e) => e.event)).toEqual([
      'filestore.node.created', 'filestore.command.completed',
      'filestore.node.moved', 'filestore.command.completed',
      'filestore.node.deleted', 'filestore.command.completed',
      'filestore.node.created', 'filestore.command.completed',
      'filestore.node.updated', 'filestore.command.completed',
      'filestore.node.created', 'filestore.command.completed',
    ]);
    // No gap: exactly what the outbox holds for the mount after the last id seen.
    const truth = await eventsAfter(api.server.core.pool, lastSeen, 1000, t.mount.id);
    expect(resumed.map((e) => e.id)).toEqual(truth.map((e) => e.seq));
    expect(resumed.map((e) => e.data.id)).toEqual(truth.map((e) => e.id));
    // And the first connection saw exactly what came before.
    const before = await eventsAfter(api.server.core.pool, (seen[0]?.id as number) - 1, 1000, t.mount.id);
    expect(seen.map((e) => e.id)).toEqual(before.filter((e) => e.seq <= lastSeen).map((e) => e.seq));
  });

  it('resuming honours the filters, and ?lastEventId= works like the header', async () => {
    const t = await mountOf();
    const key = t.mount.key;
    const first = await stream({ mountId: key });
    await command('mkdir', { mountId: key, path: 'f' });
    const seen = await first.until(completed(1));
    const lastSeen = seen[seen.length - 1]?.id as number;
    first.abort();
    await put(key, 'f/a.txt', 'a');
    await command('delete', { mountId: key, path: 'f', recursive: true });

    const deletedOnly = await stream({ mountId: key, types: 'filestore.node.deleted' }, { 'last-event-id': String(lastSeen) });
    const byQuery = await stream({ mountId: key, lastEventId: lastSeen });
    expect((await deletedOnly.until((es) => es.length >= 1)).map((e) => [e.event, e.data.data.node])).toEqual([
      ['filestore.node.deleted', expect.objectContaining({ path: 'f' })],
    ]);
    const all = await byQuery.until(completed(2));
    expect(all.map((e) => e.event)).toEqual(['filestore.node.created', 'filestore.command.completed', 'filestore.node.deleted', 'filestore.command.completed']);
    expect(all.every((e) => e.id > lastSeen)).toBe(true);
    expect(deletedOnly.events[0]?.id).toBe(all[2]?.id);
  });

  it("a stream filtered to one mount moves the client's resume position past other mounts' events (an id-only message), so its resume point never falls behind the retention", async () => {
    const a = await mountOf();
    const b = await mountOf();
    const everything = await stream({});
    // The raw text of the stream filtered to A: the ids in it are what a client resumes from.
    const controller = new AbortController();
    const res = await c.call('GET', `/v1/events/stream?${qs({ mountId: a.mount.key })}`, { token: 'read', signal: controller.signal });
    expect(res.status).toBe(200);
    let text = '';
    const reading = (async () => {
      if (!res.body) throw new Error('no body');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += value;
      }
    })().catch(() => {});
    const lastId = () => {
      const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
      return ids.length ? (ids[ids.length - 1] as number) : undefined;
    };
    try {
      const start = await eventually(async () => lastId(), 'the position the filtered stream starts from');
      await command('mkdir', { mountId: b.mount.key, path: 'x' });
      await command('mkdir', { mountId: b.mount.key, path: 'y' });
      const ofB = (await everything.until(completed(2, b.mount.id))).filter((e) => e.data.mountId === b.mount.id);
      const lastOfB = Math.max(...ofB.map((e) => e.id));
      expect(lastOfB).toBeGreaterThan(start);
      await eventually(async () => ((lastId() ?? 0) >= lastOfB ? true : undefined), "the filtered stream's position to pass B's events");
      // Positions only: none of B's events were sent on A's stream.
      expect(text).not.toContain(b.mount.id);
      expect(text).not.toMatch(/^event:/m);
    } finally {
      controller.abort();
      await reading;
    }
  });

  it('an invalid Last-Event-ID or lastEventId is 400; an unknown mount 404; no token 401', async () => {
    const t = await mountOf();
    for (const bad of ['abc', '-1', '1.5', '12345678901234567890']) {
      await expectError(c.call('GET', `/v1/events/stream?${qs({ mountId: t.mount.key })}`, { token: 'read', headers: { 'last-event-id': bad } }), 400, 'VALIDATION_ERROR');
    }
    await expectError(c.call('GET', `/v1/events/stream?${qs({ mountId: t.mount.key, lastEventId: 'abc' })}`, { token: 'read' }), 400, 'VALIDATION_ERROR');
    await expectError(c.call('GET', `/v1/events/stream?${qs({ mountId: `ghost-${randomUUID().slice(0, 8)}` })}`, { token: 'read' }), 404, 'MOUNT_NOT_FOUND');
    await expectError(c.call('GET', '/v1/events/stream', { token: 'none' }), 401, 'UNAUTHENTICATED');
  });
});
