/**
 * Small uploads (issue 17): a PUT /v1/files body of at most 64 KiB is read whole before its
 * command starts, so it holds no database connection (and no upload slot) while its bytes
 * arrive, and its hash is journaled with the pending entry itself. What a user sees: a crowd
 * of small writes beyond the upload slots all succeed; a write killed before or after storage
 * is resolved by recovery exactly as before.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listPending, findEntry } from '../shared/catalogue/journal.ts';
import { Orchestrator } from '../shared/orchestrator/orchestrator.ts';
import { recoverEntry } from '../shared/orchestrator/recovery.ts';
import { startTestServer, type TestServer } from './support/api.ts';
import { expectExactRollups, livePaths } from './support/assertions.ts';
import { createTestMount, type TestMount } from './support/filestore.ts';
import { TEST_DATABASE_URL } from './support/env.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let server: TestServer;
let t: TestMount;
beforeAll(async () => {
  // A pool of 4: two upload slots (half the pool), no recovery sweeps of our own.
  server = await startTestServer({ filestore: { poolSize: 4, recover: false } });
  t = await createTestMount(server.core, 'local');
});
afterAll(async () => {
  await t?.cleanup();
  await server?.close();
});

const put = (p: string, body: Buffer, headers: Record<string, string> = {}) =>
  fetch(`${server.url}/v1/files?mountId=${encodeURIComponent(t.mount.key)}&path=${encodeURIComponent(p)}`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${server.tokens.write}`, 'content-type': 'application/octet-stream', ...headers },
    body: new Uint8Array(body),
  });

/** A pool whose sessions a test may terminate (the process "dies"). */
function doomedPool(): pg.Pool {
  const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 3 });
  pool.on('error', () => {});
  pool.on('connect', (c) => c.on('error', () => {}));
  return pool;
}

/** Terminates the database session that owns a journal entry. */
async function killOwner(entryId: number): Promise<void> {
  const { rows } = await server.core.pool.query<{ pid: number }>(
    `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 4242 AND objid = $1 AND objsubid = 2 AND granted`,
    [entryId],
  );
  for (const r of rows) await server.core.pool.query('SELECT pg_terminate_backend($1, 5000)', [r.pid]);
}

async function recoverMine(): Promise<void> {
  const deps = { pool: server.core.pool, backends: server.core.backends, afterCommit: async () => {} };
  for (const e of await listPending(server.core.pool, 0, 10_000)) {
    if (e.mountId !== t.mount.id) continue;
    await killOwner(e.id);
    await recoverEntry(deps, e);
  }
}

describe('small PUT /v1/files', () => {
  it('12 concurrent 4 KB writes on a server with 2 upload slots all succeed, beside a 1 MiB one that streams', async () => {
    const bodies = Array.from({ length: 12 }, () => randomBytes(4096));
    const big = randomBytes(1024 * 1024);
    const answers = await Promise.all([...bodies.map((b, i) => put(`crowd/d${i % 3}/f${i}.bin`, b)), put('crowd/big.bin', big)]);
    const json = await Promise.all(answers.map(async (r) => ({ status: r.status, body: (await r.json()) as { node: { sha256: string; sizeBytes: number } } })));
    expect(json.map((j) => j.status)).toEqual(Array(13).fill(200));
    for (const [i, b] of bodies.entries()) {
      expect(json[i]?.body.node).toMatchObject({ sha256: sha(b), sizeBytes: 4096 });
      expect(await readFile(path.join(t.root as string, `crowd/d${i % 3}/f${i}.bin`))).toEqual(b);
    }
    expect(await readFile(path.join(t.root as string, 'crowd/big.bin'))).toEqual(big);
    await expectExactRollups(server.core, t.mount.id);
  });

  it('a small body failing its X-Checksum-Sha256 is refused as before (422), nothing written', async () => {
    const r = await put('bad.bin', randomBytes(100), { 'x-checksum-sha256': sha(Buffer.from('something else')) });
    expect(r.status).toBe(422);
    expect(((await r.json()) as { error: { code: string } }).error.code).toBe('CHECKSUM_MISMATCH');
    expect(await livePaths(server.core, t.mount.id)).not.toContain('bad.bin');
  });

  it("a small write's pending entry holds its hash before the bytes are placed", async () => {
    let pending: Record<string, unknown> | undefined;
    const o = new Orchestrator({
      pool: server.core.pool,
      backends: server.core.backends,
      hooks: { beforeStorage: async (id) => void (pending = (await findEntry(server.core.pool, id))?.request) },
    });
    const bytes = randomBytes(2000);
    const r = await o.writeFile(t.mount.key, { path: 'early/hash.bin' }, bytes);
    expect(pending).toMatchObject({ path: 'early/hash.bin', contentSha256: sha(bytes), contentSizeBytes: 2000 });
    expect(r.node).toMatchObject({ sha256: sha(bytes), sizeBytes: 2000 });
    // The entry ends succeeded, its request as the client sent it plus the body's facts.
    const entry = await findEntry(server.core.pool, r.journalEntryId);
    expect(entry?.status).toBe('succeeded');
    expect(entry?.request).toMatchObject({ path: 'early/hash.bin', contentSha256: sha(bytes), contentSizeBytes: 2000 });
  });

  it('a small write killed before storage fails INTERRUPTED at recovery, the old file intact; killed after storage it is completed', async () => {
    const old = randomBytes(300);
    expect((await put('k/before.bin', old)).status).toBe(200);
    const before = new Orchestrator({
      pool: doomedPool(),
      backends: server.core.backends,
      hooks: {
        beforeStorage: async (id) => {
          await killOwner(id);
          throw new Error('process died');
        },
      },
    });
    await before.writeFile(t.mount.key, { path: 'k/before.bin' }, randomBytes(400)).catch(() => undefined);
    const after = new Orchestrator({ pool: doomedPool(), backends: server.core.backends, hooks: { afterStorage: (id) => killOwner(id) } });
    const placed = randomBytes(500);
    await after.writeFile(t.mount.key, { path: 'k/after.bin' }, placed).catch(() => undefined);
    const journalOf = async () =>
      (
        await server.core.pool.query<{ status: string; request: { path: string }; error: { code: string } | null; recovered: boolean }>(
          "SELECT status, request, error, recovered FROM filestore.journal_entries WHERE mount_id = $1 AND request->>'path' LIKE 'k/%' ORDER BY id",
          [t.mount.id],
        )
      ).rows;
    expect((await journalOf()).filter((j) => j.status === 'pending')).toHaveLength(2);

    await recoverMine();
    const journal = await journalOf();
    expect(journal.filter((j) => j.status === 'pending')).toEqual([]);
    const byPath = (p: string) => journal.filter((j) => j.request.path === p).at(-1);
    expect(byPath('k/before.bin')).toMatchObject({ status: 'failed', error: { code: 'INTERRUPTED' } });
    expect(byPath('k/after.bin')).toMatchObject({ status: 'succeeded', recovered: true });
    expect(await readFile(path.join(t.root as string, 'k/before.bin'))).toEqual(old);
    expect(await readFile(path.join(t.root as string, 'k/after.bin'))).toEqual(placed);
    const nodes = await server.core.pool.query<{ path: string; sha256: string }>(
      "SELECT path, sha256 FROM filestore.nodes WHERE mount_id = $1 AND path LIKE 'k/%' AND kind = 'file' AND deleted_at IS NULL ORDER BY path",
      [t.mount.id],
    );
    expect(nodes.rows).toEqual([
      { path: 'k/after.bin', sha256: sha(placed) },
      { path: 'k/before.bin', sha256: sha(old) },
    ]);
    await expectExactRollups(server.core, t.mount.id);
  });
});

describe('small PUT /v1/files in a crowd', () => {
  it('40 concurrent small writes keep to the upload slots (half the pool of 4): every one succeeds, and nothing else ever waits for a connection', async () => {
    const pool = server.core.pool as unknown as { totalCount: number; idleCount: number; waitingCount: number };
    let maxWaiting = 0;
    let stop = false;
    const watch = (async () => {
      while (!stop) {
        maxWaiting = Math.max(maxWaiting, pool.waitingCount);
        await new Promise((r) => setImmediate(r));
      }
    })();
    const bodies = Array.from({ length: 40 }, () => randomBytes(4096));
    const answers = await Promise.all(bodies.map((b, i) => put(`crowd40/d${i % 4}/f${i}.bin`, b)));
    stop = true;
    await watch;
    expect(answers.map((r) => r.status)).toEqual(Array(40).fill(200));
    for (const [i, b] of bodies.entries()) expect(await readFile(path.join(t.root as string, `crowd40/d${i % 4}/f${i}.bin`))).toEqual(b);
    // Two commands at a time hold two connections; the other two stay free for everything else.
    expect(maxWaiting).toBe(0);
  });

  it('a body shorter than its Content-Length writes nothing', async () => {
    const { request } = await import('node:http');
    const url = new URL(`${server.url}/v1/files?mountId=${encodeURIComponent(t.mount.key)}&path=short.bin`);
    const status = await new Promise<number | string>((resolve) => {
      const req = request(url, { method: 'PUT', headers: { authorization: `Bearer ${server.tokens.write}`, 'content-type': 'application/octet-stream', 'content-length': '1000' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', (e) => resolve((e as NodeJS.ErrnoException).code ?? 'error'));
      req.write(randomBytes(400));
      setTimeout(() => req.destroy(), 200); // the client goes away mid-body
    });
    expect(status).not.toBe(200);
    expect(await livePaths(server.core, t.mount.id)).not.toContain('short.bin');
  });
});
