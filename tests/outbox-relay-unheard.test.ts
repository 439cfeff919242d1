import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendEvents, eventsAfter, type EventEnvelope } from '../shared/catalogue/outbox.ts';
import { InlineEventBus } from '../shared/events/bus.ts';
import { OutboxRelay } from '../shared/events/relay.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import type { Filestore } from '../shared/runtime.ts';
import { startFilestore } from './support/filestore.ts';

/**
 * The in-process bus with nobody subscribed (npm start with no event stream open): the relay
 * publishes (marks) the events without reading their data back; the events keep their data
 * for whoever reads them later (a stream resuming from the outbox), and a subscriber that is
 * there gets them with their data.
 */
describe('the relay of an in-process bus nobody listens to', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startFilestore();
    await core.relay?.stop(); // this catalogue's own relay would publish the rows itself
  });
  afterAll(() => core.close());

  const append = (mountId: string, n: number, tag: string) =>
    appendEvents(
      core.pool,
      Array.from({ length: n }, (_, i) => ({ type: 'filestore.node.reconciled' as const, mountId, data: { tag, i, node: { path: `${tag}/${i}` } } })),
    );

  it('publishes without listeners, then with one: every event once, in order, with its data for the listener and in the outbox', async () => {
    const bus = new InlineEventBus();
    const relay = new OutboxRelay({ pool: core.pool, bus, intervalMs: 3_600_000, batchSize: 7, metrics: new PromMetrics({ collectDefaults: false }) });
    const mountId = randomUUID();
    const { rows: before } = await core.pool.query<{ seq: number | null }>('SELECT max(seq) AS seq FROM filestore.outbox');

    await append(mountId, 20, 'unheard');
    await relay.drain();
    const { rows: left } = await core.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM filestore.outbox WHERE published_at IS NULL AND data->>'tag' = 'unheard' AND mount_id = $1`, [mountId]);
    expect(left[0]?.n).toBe(0);

    const got: EventEnvelope[] = [];
    await bus.subscribe((e) => {
      if (e.mountId === mountId) got.push(e);
    });
    await append(mountId, 20, 'heard');
    await relay.drain();
    expect(got.map((e) => e.data)).toEqual(Array.from({ length: 20 }, (_, i) => ({ tag: 'heard', i, node: { path: `heard/${i}` } })));

    // Both kinds are published once, in sequence order, with their data, as a stream resuming reads them.
    const all = (await eventsAfter(core.pool, before[0]?.seq ?? 0, 1000, mountId)).map((e) => e.data as { tag: string; i: number });
    expect(all.map((d) => `${d.tag}${d.i}`)).toEqual([
      ...Array.from({ length: 20 }, (_, i) => `unheard${i}`),
      ...Array.from({ length: 20 }, (_, i) => `heard${i}`),
    ]);
    await relay.stop();
  });
});
