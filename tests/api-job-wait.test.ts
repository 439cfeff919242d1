/**
 * GET /v1/reconcile/jobs/:id?waitMs= is a long poll: a job still queued or running is answered
 * once it has settled (whichever process settles it: here the test, as another worker would),
 * or after waitMs as it is then; a bad waitMs is a 400. `filestore reconcile --wait` asks this
 * way, so it ends as its job does instead of up to a poll interval later.
 */
import { describe, expect, it } from 'vitest';
import { announceSettled, JobWaits } from '../shared/catalogue/job-waits.ts';
import { finishJob } from '../shared/catalogue/jobs.ts';
import { runningRootJob } from './support/filestore.ts';
import { expectError, useApiServer } from './support/http.ts';

const api = useApiServer('read');
const { c, mountOf } = api;

interface Job {
  id: number;
  status: string;
  result: Record<string, number> | null;
}

/** A job row as a worker elsewhere holds it: running, with no queue message for this server to run. */
async function runningJob(): Promise<number> {
  const t = await mountOf();
  return Number((await runningRootJob(api.server.core, t.mount.id)).id);
}

describe('GET /v1/reconcile/jobs/:id?waitMs=', () => {
  it('answers a running job once it has settled, with its final counts', async () => {
    const id = await runningJob();
    expect((await c.json<Job>('GET', `/v1/reconcile/jobs/${id}`, 200)).status).toBe('running');
    const held = c.json<Job>('GET', `/v1/reconcile/jobs/${id}?waitMs=20000`, 200);
    let answered = false;
    void held.then(() => (answered = true), () => (answered = true));
    // Still held while the job runs (a plain GET answers "running" at once).
    await new Promise((r) => setTimeout(r, 300));
    expect(answered).toBe(false);
    await finishJob(api.server.core.pool, id, { status: 'succeeded', result: { checked: 3, unchanged: 3 } });
    expect(await held).toMatchObject({ id, status: 'succeeded', result: { checked: 3, unchanged: 3 } });
  });

  it('answers after waitMs with the job as it is then when it has not settled', async () => {
    const id = await runningJob();
    let answered = false;
    const held = c.json<Job>('GET', `/v1/reconcile/jobs/${id}?waitMs=600`, 200).finally(() => (answered = true));
    await new Promise((r) => setTimeout(r, 150));
    expect(answered).toBe(false); // held for its waitMs…
    expect(await held).toMatchObject({ id, status: 'running' }); // …then answered as it is
  });

  it('answers a settled job at once, and several waiting requests together', async () => {
    const id = await runningJob();
    const other = await runningJob();
    const held = [1, 2, 3].map(() => c.json<Job>('GET', `/v1/reconcile/jobs/${id}?waitMs=20000`, 200));
    const heldOther = c.json<Job>('GET', `/v1/reconcile/jobs/${other}?waitMs=20000`, 200);
    await new Promise((r) => setTimeout(r, 100));
    await finishJob(api.server.core.pool, id, { status: 'failed', error: { code: 'STORAGE_ERROR', message: 'gone' } });
    for (const job of await Promise.all(held)) expect(job).toMatchObject({ id, status: 'failed' });
    await finishJob(api.server.core.pool, other, { status: 'succeeded' });
    expect((await heldOther).status).toBe('succeeded');
    expect((await c.json<Job>('GET', `/v1/reconcile/jobs/${id}?waitMs=20000`, 200)).status).toBe('failed');
  });

  it('a job removed while waited for is 404 NOT_FOUND', async () => {
    const id = await runningJob();
    const held = c.call('GET', `/v1/reconcile/jobs/${id}?waitMs=20000`);
    await new Promise((r) => setTimeout(r, 100));
    await api.server.core.pool.query('DELETE FROM filestore.reconciliation_jobs WHERE id = $1', [id]);
    const res = await held;
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
  });

  it('a job this process settles wakes its waits at once, before the next look at the catalogue', async () => {
    const id = await runningJob();
    const pool = api.server.core.pool;
    const waits = new JobWaits(pool, { pollMs: 600_000 }); // looks only every ten minutes
    try {
      let woken = false;
      const waited = waits.settled(id, 600_000).then(() => (woken = true));
      await finishJob(pool, id, { status: 'succeeded' });
      announceSettled(pool, id + 1); // another job: this wait goes on
      announceSettled({ query: pool.query.bind(pool) }, id); // the same id in another catalogue: too
      await new Promise((r) => setTimeout(r, 50));
      expect(woken).toBe(false);
      announceSettled(pool, id); // as the reconcile worker does once it has settled the job
      await waited;
      expect(woken).toBe(true);
    } finally {
      waits.close();
    }
  });

  it('a job this server queues and runs is followed to its end', async () => {
    const t = await mountOf();
    const queued = await c.json<Job>('POST', '/v1/reconcile', 202, { token: 'write', json: { mountId: t.mount.key } });
    const job = await c.json<Job>('GET', `/v1/reconcile/jobs/${queued.id}?waitMs=20000`, 200);
    expect(job).toMatchObject({ id: queued.id, status: 'succeeded', result: expect.objectContaining({ checked: 1 }) });
  });

  it('a waitMs that is not a whole number of milliseconds up to 20000 is 400', async () => {
    const id = await runningJob();
    for (const bad of ['-1', '20001', 'soon', '1.5']) {
      await expectError(c.call('GET', `/v1/reconcile/jobs/${id}?waitMs=${bad}`), 400, 'VALIDATION_ERROR');
    }
  });
});
