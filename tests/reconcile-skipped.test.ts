import { execFileSync } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './support/api.ts';
import { createTestMount, sharedS3, stopS3, type TestMount } from './support/filestore.ts';
import { client, eventually, qs, type Client } from './support/http.ts';
import { putRawKey, testS3Client } from './support/s3.ts';

// Names the catalogue cannot hold (a newline or tab, bytes that are not UTF-8, NFD, FIFOs)
// are passed over by a reconciliation: the job says how many and why, the log says it once,
// and filestore_reconcile_skipped_total counts them.

interface JobJson {
  id: number;
  status: string;
  result: Record<string, unknown> | null;
}

let server: TestServer;
let c: Client;
const lines: string[] = [];
const mounts: TestMount[] = [];

beforeAll(async () => {
  server = await startTestServer({ filestore: { log: (line) => lines.push(line) } });
  c = client(server, 'admin');
});
afterAll(async () => {
  await server.close();
  for (const m of mounts) await m.cleanup();
  await stopS3();
});

async function mountOf(kind: 'local' | 's3'): Promise<TestMount> {
  const m = await createTestMount(server.core, kind);
  mounts.push(m);
  return m;
}

async function reconcile(mountKey: string, p = '', recursive = true): Promise<JobJson> {
  const queued = await c.json<JobJson>('POST', '/v1/reconcile', 202, { json: { mountId: mountKey, path: p, recursive } });
  return eventually(async () => {
    const job = await c.json<JobJson>('GET', `/v1/reconcile/jobs/${queued.id}`, 200);
    return ['succeeded', 'failed', 'cancelled'].includes(job.status) ? job : undefined;
  }, `job ${queued.id}`);
}

async function skippedMetric(mountKey: string): Promise<Record<string, number>> {
  const text = (await server.core.metrics.exposition?.text()) ?? '';
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^filestore_reconcile_skipped_total\{(.*)\} (\d+)$/.exec(line);
    if (!m || !(m[1] as string).includes(`mount="${mountKey}"`)) continue;
    const reason = /reason="([^"]+)"/.exec(m[1] as string)?.[1] as string;
    out[reason] = Number(m[2]);
  }
  return out;
}

const logLinesOf = (jobId: number) => lines.filter((l) => l.includes(`job ${jobId}`) && l.includes('skipped'));

describe('names the catalogue cannot hold', () => {
  it('a local audit counts them by reason in the job result, logs them once with escaped examples, and counts them in the metric', async () => {
    const t = await mountOf('local');
    const root = t.root as string;
    const abs = (...p: string[]) => path.join(root, ...p);
    await mkdir(abs('dir'), { recursive: true });
    await mkdir(abs('deep', 'er'), { recursive: true });
    for (const d of ['a', 'b', 'c', 'd', 'e']) await mkdir(abs('deep', d), { recursive: true }); // split over walker sessions
    await writeFile(abs('ok.txt'), 'ok');
    await writeFile(abs('dir', 'ok2.txt'), 'ok');
    await writeFile(abs('new\nline.txt'), 'x');
    await writeFile(abs('dir', 'tab\tname.txt'), 'x');
    await writeFile(Buffer.concat([Buffer.from(`${abs('deep', 'er')}/bad-`), Buffer.from([0xff]), Buffer.from('.txt')]), 'x');
    await writeFile(abs('dir', 'cafe\u0301.txt'), 'x');
    await writeFile(abs('deep', 'er', 'real-\ufffd.txt'), 'x'); // valid UTF-8 holding U+FFFD, beside bad-\xff: kept
    execFileSync('mkfifo', [abs('deep', 'c', 'pipe')]);

    const job = await reconcile(t.mount.key);
    expect(job.status).toBe('succeeded');
    expect(job.result).toMatchObject({
      discovered: 11, // ok.txt, dir/ok2.txt, deep/er/real-\ufffd.txt and the directories dir, deep, deep/er, deep/a…e
      skipped: 5,
      skippedByReason: { invalid_name: 2, not_utf8: 1, not_nfc: 1, unsupported_kind: 1 },
    });
    const sample = job.result?.skippedSample as string[];
    expect(sample).toEqual(expect.arrayContaining(['new\\nline.txt', 'dir/tab\\tname.txt', 'deep/er/bad-\\xff.txt', 'deep/c/pipe']));
    for (const s of sample) expect(s).not.toMatch(/[\u0000-\u001f]/);

    const logged = logLinesOf(job.id);
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain('5 names');
    expect(logged[0]).toContain('invalid_name 2');
    expect(logged[0]).not.toMatch(/[\n\t]/);
    expect(await skippedMetric(t.mount.key)).toEqual({ invalid_name: 2, not_utf8: 1, not_nfc: 1, unsupported_kind: 1 });

    // None of them was catalogued.
    const listed = await c.json<{ items: Array<{ path: string }> }>('GET', `/v1/nodes?${qs({ mountId: t.mount.key, limit: 100 })}`, 200);
    expect(listed.items.map((n) => n.path).filter((p) => /[\t\n\ufffd]|pipe|cafe/.test(p))).toEqual(['deep/er/real-\ufffd.txt']);
  });

  it('reconciling one directory (listed in this process, not by the walkers) counts what it passes over too', async () => {
    const t = await mountOf('local');
    const abs = (...p: string[]) => path.join(t.root as string, ...p);
    await mkdir(abs('dir'));
    await writeFile(abs('dir', 'fine.txt'), 'x');
    await writeFile(abs('dir', 'tab\tname.txt'), 'x');
    execFileSync('mkfifo', [abs('dir', 'pipe')]);
    const job = await reconcile(t.mount.key, 'dir', false);
    expect(job.status).toBe('succeeded');
    expect(job.result).toMatchObject({ discovered: 2, skipped: 2, skippedByReason: { invalid_name: 1, unsupported_kind: 1 } });
    expect(logLinesOf(job.id)).toHaveLength(1);
  });

  it('a catalogued file replaced by a FIFO is not left ACTIVE: it becomes MISSING, and the FIFO is counted as skipped', async () => {
    const t = await mountOf('local');
    await c.json('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'was-a-file' })}`, 200, { body: 'bytes' });
    await rm(path.join(t.root as string, 'was-a-file'));
    execFileSync('mkfifo', [path.join(t.root as string, 'was-a-file')]);
    const job = await reconcile(t.mount.key);
    expect(job.status).toBe('succeeded');
    expect(job.result).toMatchObject({ missing: 1, skipped: 1, skippedByReason: { unsupported_kind: 1 } });
    const node = await c.json<{ consistencyState: string }>('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'was-a-file' })}`, 200);
    expect(node.consistencyState).toBe('MISSING');
  });

  it('a clean tree reports skipped 0 and logs nothing about skipping', async () => {
    const t = await mountOf('local');
    await writeFile(path.join(t.root as string, 'plain.txt'), 'x');
    const job = await reconcile(t.mount.key);
    expect(job.result).toMatchObject({ discovered: 1, skipped: 0 });
    expect(job.result).not.toHaveProperty('skippedSample');
    expect(logLinesOf(job.id)).toEqual([]);
  });

  it('an S3 audit counts keys that are no canonical path (NFD, empty segments, control characters)', async () => {
    const t = await mountOf('s3');
    const s3 = await sharedS3();
    const raw = testS3Client(s3.endpoint);
    const bucket = t.mount.bucket as string;
    await putRawKey(raw, bucket, 'tenant/ok.txt', 'x');
    await putRawKey(raw, bucket, 'tenant/cafe\u0301.txt', 'x');
    await putRawKey(raw, bucket, 'tenant/bad//double.txt', 'x');
    await putRawKey(raw, bucket, 'tenant/x\ty.txt', 'x');
    await putRawKey(raw, bucket, 'tenant/.filestore-staging/leftover.abc', 'x'); // Filestore's own: hidden, not skipped
    const job = await reconcile(t.mount.key);
    expect(job.status).toBe('succeeded');
    expect(job.result).toMatchObject({ skipped: 3, skippedByReason: { not_nfc: 1, invalid_name: 2 } });
    expect(job.result?.skippedSample).toEqual(expect.arrayContaining(['x\\ty.txt', 'bad//double.txt']));
    expect(await skippedMetric(t.mount.key)).toEqual({ not_nfc: 1, invalid_name: 2 });
  });
});
