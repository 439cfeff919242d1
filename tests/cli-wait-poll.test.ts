/**
 * `filestore reconcile --wait` asks the server to hold each question until the job settles
 * (GET /v1/reconcile/jobs/:id?waitMs=1000, a long poll: tests/api-job-wait.test.ts). A server
 * that answers an open job at once (older than long polls) is asked soon after the job was queued, then at a twentieth
 * of the time waited so far, never more than every half second: a job of 0.6 s is seen finished
 * within ~0.06 s of its end (a fixed half-second poll could add up to 0.5 s), a long job costs
 * two small GETs a second.
 */
import { describe, expect, it } from 'vitest';
import { LONG_POLL_MS, nextDelayMs, pollDelayMs } from '../cli/commands/reconcile.ts';

/** When each poll happens for a wait of `totalMs` (the poll times of the schedule). */
function pollsUntil(totalMs: number): number[] {
  const at: number[] = [];
  for (let t = pollDelayMs(0); ; t += pollDelayMs(t)) {
    at.push(t);
    if (t >= totalMs) return at;
  }
}

describe('reconcile --wait polling', () => {
  it('sees a short job finished soon after it ends', () => {
    for (const jobMs of [30, 200, 650, 1_000]) {
      const seen = pollsUntil(jobMs).at(-1) as number;
      expect(seen - jobMs).toBeLessThanOrEqual(25 + jobMs / 20);
    }
  });

  it('never polls more often than every 25 ms nor less often than every 500 ms', () => {
    for (const elapsed of [0, 10, 400, 4_000, 40_000, 3_600_000]) {
      expect(pollDelayMs(elapsed)).toBeGreaterThanOrEqual(25);
      expect(pollDelayMs(elapsed)).toBeLessThanOrEqual(500);
    }
  });

  it('a ten-minute job costs about two polls a second, not twenty', () => {
    expect(pollsUntil(600_000).length).toBeLessThan(1_250);
  });
});

describe('reconcile --wait asks with a long poll', () => {
  it('asks again at once after a held question or a final answer; paces a server that answers an open job at once', () => {
    expect(nextDelayMs('running', LONG_POLL_MS, 5_000)).toBe(0);
    expect(nextDelayMs('queued', LONG_POLL_MS / 2, 5_000)).toBe(0);
    expect(nextDelayMs('succeeded', 2, 5_000)).toBe(0);
    expect(nextDelayMs('cancelled', 2, 5_000)).toBe(0); // a job joined to another: that one is followed at once
    for (const elapsed of [0, 650, 60_000]) expect(nextDelayMs('running', 3, elapsed)).toBe(pollDelayMs(elapsed));
  });

  it('every question names waitMs, and a server that ignores it is not asked in a tight loop', async () => {
    const { createServer } = await import('node:http');
    const { FilestoreClient } = await import('../shared/client/index.ts');
    const { waitForJob } = await import('../cli/commands/reconcile.ts');
    const row = (status: string) => ({
      id: 5, mountId: '00000000-0000-4000-8000-000000000001', path: '', reason: 'manual', options: {}, status, attempts: 1, coalesced: 0,
      result: status === 'succeeded' ? { checked: 1 } : null, error: null,
      createdAt: '2026-12-06T00:00:00.000Z', startedAt: null, finishedAt: null, updatedAt: '2026-12-06T00:00:00.000Z',
    });
    // An older server: answers at once, "running" four times, then "succeeded".
    const asked: Array<{ url: string; at: number }> = [];
    const server = createServer((req, res) => {
      asked.push({ url: req.url ?? '', at: performance.now() });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(row(asked.length > 4 ? 'succeeded' : 'running')));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as { port: number };
      const client = new FilestoreClient({ baseUrl: `http://127.0.0.1:${port}`, token: 't' });
      const done = await waitForJob(client, row('queued') as Parameters<typeof waitForJob>[1]);
      expect(done.status).toBe('succeeded');
      expect(asked).toHaveLength(5);
      for (const a of asked) expect(a.url).toBe(`/v1/reconcile/jobs/5?waitMs=${LONG_POLL_MS}`);
      // After each early "running", a pause of at least pollDelayMs (timers never fire early).
      for (let i = 1; i < asked.length; i++) expect((asked[i]?.at ?? 0) - (asked[i - 1]?.at ?? 0)).toBeGreaterThanOrEqual(pollDelayMs(0) - 1);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

describe('reconcile --wait follows a job joined to another', () => {
  it('a job cancelled COALESCED into another is followed to that job’s end, over two hops and a passing 503', async () => {
    const { createServer } = await import('node:http');
    const { FilestoreClient } = await import('../shared/client/index.ts');
    const { waitForJob } = await import('../cli/commands/reconcile.ts');
    const row = (id: number, status: string, error: Record<string, unknown> | null, result: Record<string, number> | null = null) => ({
      id, mountId: '00000000-0000-4000-8000-000000000001', path: '', reason: 'manual', options: {}, status, attempts: 1, coalesced: 0, result, error,
      createdAt: '2026-12-06T00:00:00.000Z', startedAt: null, finishedAt: null, updatedAt: '2026-12-06T00:00:00.000Z',
    });
    // The API as it answers: job 7 was joined to job 8, itself joined to job 9, which
    // finishes; the first question about job 8 meets a server that is not answering now (503).
    let asked8 = 0;
    const server = createServer((req, res) => {
      if (req.url?.startsWith('/v1/reconcile/jobs/8') && asked8++ === 0) {
        res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' }).end(JSON.stringify({ error: { code: 'UNAVAILABLE', message: 'not now' } }));
        return;
      }
      const body = req.url?.startsWith('/v1/reconcile/jobs/7')
        ? row(7, 'cancelled', { code: 'COALESCED', jobId: 8 })
        : req.url?.startsWith('/v1/reconcile/jobs/8')
          ? row(8, 'cancelled', { code: 'COALESCED', jobId: 9 })
          : row(9, 'succeeded', null, { checked: 3, unchanged: 3, updated: 0, discovered: 0, missing: 0 });
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as { port: number };
      const client = new FilestoreClient({ baseUrl: `http://127.0.0.1:${port}`, token: 't' });
      const queued = row(7, 'queued', null) as Parameters<typeof waitForJob>[1];
      const done = await waitForJob(client, queued);
      expect(done).toMatchObject({ id: 9, status: 'succeeded', result: { checked: 3 } });
      expect(asked8).toBeGreaterThanOrEqual(2); // asked again after the 503, not given up
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
