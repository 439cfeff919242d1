import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendEvents, type EventEnvelope } from '../shared/catalogue/outbox.ts';
import { pruneOutbox } from '../shared/catalogue/outbox-retention.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { FilestoreApiError, FilestoreClient, type FilestoreEvent } from '../shared/client/index.ts';
import { loadConfig } from '../shared/config.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import { migrate } from '../shared/db/migrate.ts';
import { InlineEventBus } from '../shared/events/bus.ts';
import { OutboxTail } from '../shared/events/outbox-tail.ts';
import { OutboxRelay } from '../shared/events/relay.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { createFilestore, type Filestore } from '../shared/runtime.ts';
import { startTestServer, type TestServer } from './support/api.ts';
import { ownDatabase } from './support/own-database.ts';
import { client, expectError, openSse, qs, type SseReader } from './support/http.ts';

// When an event counts as published (the bus took it), and how long the outbox keeps it
// (FILESTORE_OUTBOX_RETENTION): pruned events, and the 410 a stream resuming before them gets.
// A catalogue of its own: pruning with a tiny retention would take other test files' events.

const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));
const DAY_MS = 86_400_000;
const db = ownDatabase('filestore_retention');
const url = db.url;

let pool: Pool;
const scratch: string[] = [];

beforeAll(async () => {
  await db.create();
  await migrate(url);
  pool = createPool(url, 4);
});

afterAll(async () => {
  await pool?.end();
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
  await db.drop();
});

const metrics = () => new PromMetrics({ collectDefaults: false });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

interface OutboxState {
  seq: number | null;
  published: boolean;
}

async function rowsOf(mountId: string): Promise<OutboxState[]> {
  const { rows } = await pool.query<OutboxState>(
    'SELECT seq, published_at IS NOT NULL AS published FROM filestore.outbox WHERE mount_id = $1 ORDER BY id',
    [mountId],
  );
  return rows;
}

/**
 * Makes every event published up to `upToSeq` look `days` older, as if the outbox had been
 * running that long. Publication times keep increasing with seq, as the relay writes them.
 */
async function age(upToSeq: number, days: number): Promise<void> {
  await pool.query(`UPDATE filestore.outbox SET published_at = published_at - $2 * interval '1 day' WHERE seq <= $1`, [upToSeq, days]);
}

async function prunedThrough(): Promise<number> {
  const { rows } = await pool.query<{ seq: number }>('SELECT through_seq AS seq FROM filestore.outbox_pruned');
  return rows[0]?.seq ?? -1;
}

async function localMount(core: Filestore) {
  const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-retention-'));
  scratch.push(root);
  return createMount(core.pool, { key: `ret-${randomUUID().slice(0, 8)}`, kind: 'local', rootPath: root });
}

/** A bus that holds a batch until released: the relay's pass waits inside publish. */
class GatedBus extends InlineEventBus {
  private release!: () => void;
  private readonly gate = new Promise<void>((r) => (this.release = r));
  entered!: Promise<void>;
  private enter!: () => void;
  constructor() {
    super();
    this.entered = new Promise<void>((r) => (this.enter = r));
  }
  override async publish(events: EventEnvelope[]): Promise<void> {
    this.enter();
    await this.gate;
    await super.publish(events);
  }
  open(): void {
    this.release();
  }
}

describe('published_at is when the bus took the batch', () => {
  it('a batch held by the bus gets a published_at later than a moment observed while it was held, not the time of its claim', async () => {
    const mountId = randomUUID();
    await appendEvents(pool, [{ type: 'filestore.node.updated', mountId, data: { tag: 'held' } }]);
    const bus = new GatedBus();
    const relay = new OutboxRelay({ pool, bus, intervalMs: 3_600_000, metrics: metrics() });
    const draining = relay.drain();
    await bus.entered;
    // The claim is made; the bus has not accepted the batch yet.
    const { rows } = await pool.query<{ t: string }>('SELECT clock_timestamp()::text AS t');
    const heldAt = rows[0]?.t as string;
    bus.open();
    expect(await draining).toBeGreaterThanOrEqual(1);
    const { rows: after } = await pool.query<{ later: boolean; seq: number | null }>(
      'SELECT published_at > $2::timestamptz AS later, seq FROM filestore.outbox WHERE mount_id = $1',
      [mountId, heldAt],
    );
    expect(after).toEqual([{ later: true, seq: expect.any(Number) }]);
  });

  it('a batch the bus refused is not marked published (no published_at, no seq); the next pass publishes it', async () => {
    const mountId = randomUUID();
    await appendEvents(pool, [{ type: 'filestore.node.updated', mountId, data: { tag: 'refused' } }]);
    const failing = new (class extends InlineEventBus {
      override async publish(): Promise<void> {
        throw new Error('redis went away');
      }
    })();
    const broken = new OutboxRelay({ pool, bus: failing, intervalMs: 3_600_000, metrics: metrics() });
    await expect(broken.drain()).rejects.toThrow('redis went away');
    expect(await rowsOf(mountId)).toEqual([{ seq: null, published: false }]);

    const bus = new InlineEventBus();
    const got: EventEnvelope[] = [];
    await bus.subscribe((e) => got.push(e));
    await new OutboxRelay({ pool, bus, intervalMs: 3_600_000, metrics: metrics() }).drain();
    const [row] = await rowsOf(mountId);
    expect(row).toEqual({ seq: expect.any(Number), published: true });
    expect(got.filter((e) => e.mountId === mountId).map((e) => e.seq)).toEqual([row?.seq]);
  });
});

describe('outbox retention', () => {
  it('the maintenance step deletes published events older than the retention (default 7 days), never younger or unpublished ones', async () => {
    const a = await createFilestore({ databaseUrl: url, redisUrl: 'inline', migrate: false, maintenanceIntervalMs: 600_000, metrics: metrics() });
    let mountId = '';
    let seqs: number[] = [];
    try {
      const mount = await localMount(a);
      mountId = mount.id;
      await a.orchestrator.mkdir(mount.key, { path: 'old' });
      await a.orchestrator.mkdir(mount.key, { path: 'older' });
      await a.orchestrator.mkdir(mount.key, { path: 'recent' });
      await until(async () => (await rowsOf(mount.id)).every((r) => r.published), 'the events to be published');
      seqs = (await rowsOf(mount.id)).map((r) => r.seq as number);
      expect(seqs).toHaveLength(6);
      await age(seqs[5] as number, 6); // the last command: 6 days ago
      await age(seqs[3] as number, 2); // the first two: 8 days ago
    } finally {
      await a.close();
    }
    // An event no relay has published (none runs now), written long ago.
    await appendEvents(pool, [{ type: 'filestore.node.updated', mountId, data: { tag: 'unpublished' } }]);
    await pool.query(`UPDATE filestore.outbox SET occurred_at = now() - interval '30 days' WHERE mount_id = $1 AND seq IS NULL`, [mountId]);
    // A process that starts runs the maintenance step at once.
    const b = await createFilestore({ databaseUrl: url, redisUrl: 'inline', migrate: false, relay: false, maintenanceIntervalMs: 600_000, metrics: metrics() });
    try {
      expect(await rowsOf(mountId)).toEqual([
        { seq: seqs[4], published: true },
        { seq: seqs[5], published: true },
        { seq: null, published: false },
      ]);
      expect(await prunedThrough()).toBe(seqs[3]);
    } finally {
      await b.close();
    }
  });

  it('pruning goes on in batches until nothing old is left, records the highest pruned seq, and is a no-op the second time', async () => {
    const mountId = randomUUID();
    await appendEvents(pool, Array.from({ length: 23 }, (_, i) => ({ type: 'filestore.node.updated' as const, mountId, data: { i } })));
    await new OutboxRelay({ pool, bus: new InlineEventBus(), intervalMs: 3_600_000, metrics: metrics() }).drain();
    const seqs = (await rowsOf(mountId)).map((r) => r.seq as number);
    await age(seqs[20] as number, 10);
    const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM filestore.outbox WHERE seq <= $1', [seqs[20]]);
    const old = rows[0]?.n as number;
    expect(old).toBeGreaterThan(10); // two batches and more
    const first = await pruneOutbox(pool, { retentionMs: 7 * DAY_MS, batchSize: 5 });
    expect(first).toEqual({ deleted: old, prunedThrough: seqs[20] });
    expect((await rowsOf(mountId)).map((r) => r.seq)).toEqual(seqs.slice(21));
    expect(await prunedThrough()).toBe(seqs[20]);
    expect(await pruneOutbox(pool, { retentionMs: 7 * DAY_MS, batchSize: 5 })).toEqual({ deleted: 0, prunedThrough: seqs[20] });
  });

  it('a retention given to createFilestore (a tiny one here) is what the periodic maintenance prunes by', async () => {
    const core = await createFilestore({ databaseUrl: url, redisUrl: 'inline', migrate: false, maintenanceIntervalMs: 50, outboxRetentionMs: 1, metrics: metrics() });
    try {
      const mount = await localMount(core);
      await core.orchestrator.mkdir(mount.key, { path: 'brief' });
      await until(async () => (await rowsOf(mount.id)).length === 0, 'the published events to be pruned');
    } finally {
      await core.close();
    }
  });

  it('FILESTORE_OUTBOX_RETENTION takes a duration (d, h, m, s or plain seconds), 7 days by default; anything else is a CONFIG_ERROR', () => {
    const base = { FILESTORE_ALLOW_INLINE: 'true' };
    const retention = (v?: string) => loadConfig(v === undefined ? base : { ...base, FILESTORE_OUTBOX_RETENTION: v }).FILESTORE_OUTBOX_RETENTION;
    expect(retention()).toBe(7 * DAY_MS);
    expect(retention('7d')).toBe(7 * DAY_MS);
    expect(retention('12h')).toBe(12 * 3_600_000);
    expect(retention('30m')).toBe(30 * 60_000);
    expect(retention('3600s')).toBe(3_600_000);
    expect(retention('86400')).toBe(DAY_MS);
    for (const bad of ['7 days', '1.5d', '-1d', 'forever', '', '30s', '0']) {
      expect(() => retention(bad), bad).toThrow(expect.objectContaining({ code: 'CONFIG_ERROR', message: expect.stringMatching(/FILESTORE_OUTBOX_RETENTION/) }));
    }
  });
});

describe('resuming a stream from before the retention window', () => {
  let server: TestServer;
  const open: SseReader[] = [];
  beforeAll(async () => {
    server = await startTestServer({ filestore: { databaseUrl: url, migrate: false, metrics: metrics() } });
  });
  afterAll(async () => {
    for (const r of open) r.abort();
    await server?.close();
  });

  /** Three commands on a fresh mount; the first one's events then pruned. Returns the seqs and the watermark. */
  async function prunedHistory() {
    const mount = await localMount(server.core);
    for (const p of ['gone', 'kept-1', 'kept-2']) await server.core.orchestrator.mkdir(mount.key, { path: p });
    await until(async () => (await rowsOf(mount.id)).every((r) => r.published), 'the events to be published');
    const seqs = (await rowsOf(mount.id)).map((r) => r.seq as number);
    await age(seqs[1] as number, 8);
    await pruneOutbox(pool, { retentionMs: 7 * DAY_MS });
    const watermark = await prunedThrough();
    expect(watermark).toBe(seqs[1]);
    return { mount, seqs, watermark };
  }

  it('Last-Event-ID (or ?lastEventId=) before the pruned events is 410 RESUME_POINT_EXPIRED saying to start from now; from the watermark on it resumes', async () => {
    const { mount, seqs, watermark } = await prunedHistory();
    const c = client(server, 'read');
    const path = `/v1/events/stream?${qs({ mountId: mount.key })}`;
    for (const lastEventId of [0, (seqs[0] as number) - 1, watermark - 1]) {
      const err = await expectError(c.call('GET', path, { headers: { 'last-event-id': String(lastEventId) } }), 410, 'RESUME_POINT_EXPIRED');
      expect(err.message).toMatch(/without Last-Event-ID/);
      expect(err.details).toMatchObject({ lastEventId, prunedThrough: watermark });
      await expectError(c.call('GET', `/v1/events/stream?${qs({ mountId: mount.key, lastEventId })}`), 410, 'RESUME_POINT_EXPIRED');
    }
    const resumed = await openSse(c, path, { headers: { 'last-event-id': String(watermark) } });
    open.push(resumed);
    expect(resumed.response.status).toBe(200);
    const events = await resumed.until((es) => es.length >= 4);
    expect(events.map((e) => e.id)).toEqual(seqs.slice(2));
    const fresh = await openSse(c, path);
    open.push(fresh);
    expect(fresh.response.status).toBe(200);
  });

  it('a replay whose events are pruned after the stream was accepted sends none of what is left and ends; the reconnect gets 410', async () => {
    const { mount, seqs, watermark } = await prunedHistory();
    const c = client(server, 'read');
    const path = `/v1/events/stream?${qs({ mountId: mount.key })}`;
    // Holds every read of the outbox (the replay's too) until the pruning below commits.
    const pruner = await pool.connect();
    try {
      await pruner.query('BEGIN');
      await pruner.query('LOCK TABLE filestore.outbox IN ACCESS EXCLUSIVE MODE');
      const s = await openSse(c, path, { headers: { 'last-event-id': String(watermark) } });
      open.push(s);
      expect(s.response.status).toBe(200);
      await pruner.query('DELETE FROM filestore.outbox WHERE seq <= $1', [seqs[3]]);
      await pruner.query('UPDATE filestore.outbox_pruned SET through_seq = $1', [seqs[3]]);
      await pruner.query('COMMIT');
      await until(() => s.ended, 'the stream to end');
      // Not seqs[4] and seqs[5] alone: that would be a silent gap.
      expect(s.events).toEqual([]);
      await expectError(c.call('GET', path, { headers: { 'last-event-id': String(watermark) } }), 410, 'RESUME_POINT_EXPIRED');
    } finally {
      await pruner.query('ROLLBACK').catch(() => {});
      pruner.release();
    }
  });

  it('a stream opened on an outbox pruned empty starts after the pruned events: resuming from the position it gave is not a 410', async () => {
    await prunedHistory();
    const { rows } = await pool.query<{ top: number }>('SELECT max(seq) AS top FROM filestore.outbox');
    await age(rows[0]?.top as number, 8);
    await pruneOutbox(pool, { retentionMs: 7 * DAY_MS });
    expect(await pool.query('SELECT 1 FROM filestore.outbox WHERE seq IS NOT NULL')).toMatchObject({ rowCount: 0 });
    const watermark = await prunedThrough();
    // A process that starts now (its event tail has never followed) serves the stream.
    const fresh = await startTestServer({ filestore: { databaseUrl: url, migrate: false, metrics: metrics() } });
    const abort = new AbortController();
    try {
      const c = client(fresh, 'read');
      const res = await c.call('GET', '/v1/events/stream', { signal: abort.signal });
      expect(res.status).toBe(200);
      // The stream's first id-only message is where the client resumes from.
      if (!res.body) throw new Error('no body');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      let position: RegExpExecArray | null = null;
      while (!(position = /^id: (\d+)$/m.exec(text))) text += (await reader.read()).value ?? '';
      expect(Number(position[1])).toBeGreaterThanOrEqual(watermark);
      abort.abort();
      const again = await c.call('GET', '/v1/events/stream', { headers: { 'last-event-id': position[1] as string }, signal: AbortSignal.timeout(5_000) });
      expect(again.status).toBe(200);
      await again.body?.cancel().catch(() => {});
    } finally {
      abort.abort();
      await fresh.close();
    }
  });

  it('the typed client throws RESUME_POINT_EXPIRED, on the first connection and when a reconnect finds its position pruned, instead of reconnecting for ever', async () => {
    const { mount, seqs, watermark } = await prunedHistory();
    const reader = new FilestoreClient({ baseUrl: server.url, token: server.tokens.read });
    const first = await reader.events({ mountId: mount.key, lastEventId: watermark - 1 }).next().then(
      () => null,
      (e: unknown) => e,
    );
    expect(first).toBeInstanceOf(FilestoreApiError);
    expect(first).toMatchObject({ code: 'RESUME_POINT_EXPIRED', status: 410 });

    const proxy = await startProxy(new URL(server.url).port);
    const abort = new AbortController();
    try {
      const viaProxy = new FilestoreClient({ baseUrl: proxy.url, token: server.tokens.read });
      const stream = viaProxy.events({ mountId: mount.key, lastEventId: watermark, reconnectDelayMs: 20, signal: abort.signal });
      const seen: FilestoreEvent[] = [];
      while (seen.length < 4) {
        const next = await stream.next();
        if (next.done) throw new Error('the stream ended');
        seen.push(next.value);
      }
      expect(seen.map((e) => e.id)).toEqual(seqs.slice(2));
      // The connection drops and stays down while an event it has not seen is published,
      // and everything up to that event is pruned: its resume point is gone.
      proxy.block();
      proxy.dropAll();
      await server.core.orchestrator.mkdir(mount.key, { path: 'missed' });
      await until(async () => (await rowsOf(mount.id)).every((r) => r.published), 'the missed event to be published');
      const missed = Math.max(...(await rowsOf(mount.id)).map((r) => r.seq as number));
      await age(missed, 8);
      await pruneOutbox(pool, { retentionMs: 7 * DAY_MS });
      expect(await prunedThrough()).toBe(missed);
      proxy.unblock();
      const err = await stream.next().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toMatchObject({ code: 'RESUME_POINT_EXPIRED', status: 410 });
    } finally {
      abort.abort();
      await proxy.close();
    }
  });

  it('`filestore events tail --after <pruned id>` exits 1 with RESUME_POINT_EXPIRED and a hint to start from now', async () => {
    const { mount, watermark } = await prunedHistory();
    const child = spawn(process.execPath, [BIN, 'events', 'tail', '--mount', mount.key, '--after', String(watermark - 1)], {
      env: { ...process.env, FILESTORE_URL: server.url, FILESTORE_TOKEN: server.tokens.read },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    expect(code).toBe(1);
    expect(stderr).toMatch(/\(RESUME_POINT_EXPIRED\)/);
    expect(stderr).toMatch(/hint: .*without --after/);
  });
});

describe('a live tail that fell behind the retention', () => {
  it('an event tail that was not woken while its next events were published and pruned (a tiny retention) tells its listeners instead of skipping them', async () => {
    // The tail listens on a bus of its own that nobody publishes to, and polls once an hour: it
    // reads the outbox only when the test wakes it, as a stalled process would after a pause.
    const tail = new OutboxTail({ q: pool, bus: new InlineEventBus(), pollMs: 3_600_000 });
    await tail.start();
    const mountId = randomUUID();
    const heard: EventEnvelope[] = [];
    const lost: number[] = [];
    const unsubscribe = await tail.subscribe(
      (e) => e.mountId === mountId && heard.push(e),
      (pruned) => lost.push(pruned),
    );
    const relay = new OutboxRelay({ pool, bus: new InlineEventBus(), intervalMs: 3_600_000, metrics: metrics() });
    try {
      const from = tail.seq;
      await appendEvents(pool, [1, 2, 3].map((i) => ({ type: 'filestore.node.updated' as const, mountId, data: { i, tag: 'missed' } })));
      await relay.drain();
      await sleep(5);
      const pruned = await pruneOutbox(pool, { retentionMs: 1 });
      expect(pruned.prunedThrough).toBeGreaterThan(from);
      await appendEvents(pool, [{ type: 'filestore.node.updated', mountId, data: { tag: 'after the gap' } }]);
      await relay.drain();
      tail.wake();
      await until(() => lost.length > 0, 'the listener to be told of the gap');
      expect(lost).toEqual([pruned.prunedThrough]);
      // Nothing after the gap reached it: that would be a silent gap.
      expect(heard).toEqual([]);
    } finally {
      unsubscribe();
      tail.stop();
    }
  });

  it('an event stream whose tail finds its next events pruned ends; its reconnect from the last id it sent gets 410 RESUME_POINT_EXPIRED', async () => {
    const server = await startTestServer({ filestore: { databaseUrl: url, migrate: false, metrics: metrics() } });
    const abort = new AbortController();
    try {
      const mount = await localMount(server.core);
      const c = client(server, 'read');
      const res = await c.call('GET', `/v1/events/stream?${qs({ mountId: mount.key })}`, { signal: abort.signal });
      expect(res.status).toBe(200);
      let text = '';
      let ended = false;
      const reading = (async () => {
        if (!res.body) throw new Error('no body');
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
        }
      })()
        .catch(() => {})
        .finally(() => (ended = true));
      const ids = () => [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
      await until(() => ids().length > 0, 'the position the stream starts from');
      // In one transaction (invisible to the tail until it commits): events of the mount are
      // published and pruned, and one more is published after them.
      const tx = await pool.connect();
      try {
        await tx.query('BEGIN');
        await appendEvents(tx, [1, 2, 3].map((i) => ({ type: 'filestore.node.updated' as const, mountId: mount.id, data: { i } })));
        await tx.query(
          `UPDATE filestore.outbox SET seq = nextval('filestore.outbox_seq'), published_at = now() - interval '8 days' WHERE mount_id = $1 AND seq IS NULL`,
          [mount.id],
        );
        const { rows } = await tx.query<{ top: number }>('SELECT max(seq)::int AS top FROM filestore.outbox WHERE mount_id = $1', [mount.id]);
        await tx.query('DELETE FROM filestore.outbox WHERE mount_id = $1', [mount.id]);
        await tx.query('UPDATE filestore.outbox_pruned SET through_seq = greatest(through_seq, $1)', [rows[0]?.top]);
        await appendEvents(tx, [{ type: 'filestore.node.updated', mountId: mount.id, data: { tag: 'after the gap' } }]);
        await tx.query('COMMIT');
      } finally {
        tx.release();
      }
      server.core.relay?.nudge();
      await until(() => ended, 'the stream to end');
      await reading;
      // None of what came after the gap was sent: only positions.
      expect(text).not.toMatch(/^event:/m);
      const last = ids().at(-1) as number;
      await expectError(c.call('GET', `/v1/events/stream?${qs({ mountId: mount.key })}`, { headers: { 'last-event-id': String(last) } }), 410, 'RESUME_POINT_EXPIRED');
    } finally {
      abort.abort();
      await server.close();
    }
  });
});

/** A TCP proxy to the test server whose connections can be cut and refused, as a flaky network would. */
async function startProxy(targetPort: string) {
  const sockets = new Set<net.Socket>();
  let blocked = false;
  const proxy = net.createServer((downstream) => {
    if (blocked) {
      downstream.destroy();
      return;
    }
    const upstream = net.connect(Number(targetPort), '127.0.0.1');
    sockets.add(downstream).add(upstream);
    downstream.pipe(upstream).pipe(downstream);
    const end = () => {
      downstream.destroy();
      upstream.destroy();
      sockets.delete(downstream);
      sockets.delete(upstream);
    };
    downstream.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const { port } = proxy.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    dropAll() {
      for (const s of sockets) s.destroy();
    },
    /** New connections are cut at once (the network is down) until unblock. */
    block() {
      blocked = true;
    },
    unblock() {
      blocked = false;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        proxy.close(() => resolve());
      }),
  };
}
