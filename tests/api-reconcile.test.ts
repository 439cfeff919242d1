import { spawn } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ReconcileJob } from '../shared/api/schemas.ts';
import { eventually, qs, useApiServer } from './support/http.ts';

// Reconciliation over HTTP and from the CLI, with the jobs running in the server's process.

const api = useApiServer('write');
const { c, mountOf } = api;
const BIN = fileURLToPath(new URL('../cli/bin.js', import.meta.url));

const jobOf = (id: number) => c.json<Record<string, unknown>>('GET', `/v1/reconcile/jobs/${id}`, 200, { token: 'read' });
const finished = (id: number) =>
  eventually(async () => {
    const job = await jobOf(id);
    return ['succeeded', 'failed', 'cancelled'].includes(job.status as string) ? job : undefined;
  }, `job ${id} to finish`);

describe('reconciliation over the API', () => {
  it('POST /v1/reconcile queues a job (202, Location); it runs and its record shows the counts; the catalogue follows storage', async () => {
    const t = await mountOf('local');
    await c.json('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'a.txt' })}`, 200, { body: 'one' });
    await mkdir(path.join(t.root as string, 'found'), { recursive: true });
    await writeFile(path.join(t.root as string, 'found', 'new.txt'), 'discovered');
    await writeFile(path.join(t.root as string, 'a.txt'), 'changed on disk');

    const res = await c.call('POST', '/v1/reconcile', { json: { mountId: t.mount.key } });
    expect(res.status).toBe(202);
    const queued = ReconcileJob.parse(await res.json());
    expect(res.headers.get('location')).toBe(`/v1/reconcile/jobs/${queued.id}`);
    expect(queued).toMatchObject({ path: '', reason: 'manual', options: { recursive: true, hash: false } });

    const done = ReconcileJob.parse(await finished(queued.id));
    expect(done.status).toBe('succeeded');
    expect(done.result).toMatchObject({ updated: 1, discovered: 2, missing: 0 });
    expect(done.attempts).toBe(1);
    const node = await c.json<{ sizeBytes: number; version: number }>('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'a.txt' })}`, 200);
    expect(node).toMatchObject({ sizeBytes: 15, version: 2 });
    await c.json('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'found/new.txt' })}`, 200);
    const listed = await c.json<{ items: Array<{ id: number }> }>('GET', `/v1/reconcile/jobs?${qs({ mountId: t.mount.key })}`, 200, { token: 'read' });
    expect(listed.items.map((j) => j.id)).toEqual([queued.id]);
  });

  it('a mount whose root is gone: the job fails with the reason, the mount is unhealthy, nothing is MISSING', async () => {
    const t = await mountOf('local');
    await c.json('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'keep.txt' })}`, 200, { body: 'k' });
    await rm(t.root as string, { recursive: true, force: true });
    const job = await c.json<{ id: number }>('POST', '/v1/reconcile', 202, { json: { mountId: t.mount.key } });
    const done = await finished(job.id);
    expect(done.status).toBe('failed');
    expect(JSON.stringify(done.error)).toContain('does not exist');
    const mount = await c.json<{ health: string }>('GET', `/v1/mounts/${t.mount.key}`, 200, { token: 'read' });
    expect(mount.health).toBe('unhealthy');
    expect(await c.json('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'keep.txt' })}`, 200)).toMatchObject({ consistencyState: 'ACTIVE' });
  });

  it('`filestore reconcile MOUNT:PATH --wait` waits and prints the final counts', async () => {
    const t = await mountOf('local');
    await mkdir(path.join(t.root as string, 'docs'), { recursive: true });
    for (const n of ['1', '2', '3']) await writeFile(path.join(t.root as string, 'docs', `${n}.txt`), n);
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, 'reconcile', `${t.mount.key}:docs`, '--wait', '--json'], {
        env: { ...process.env, FILESTORE_URL: c.url, FILESTORE_TOKEN: api.server.tokens.write },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    const job = JSON.parse(out.stdout) as { status: string; result: Record<string, number> };
    expect(job.status).toBe('succeeded');
    expect(job.result).toMatchObject({ discovered: 4, missing: 0 }); // docs and its three files
  });
});
