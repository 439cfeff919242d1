/**
 * Edge cases of locks, rollups, idempotency, recovery, relay and cache, from a review of the
 * orchestrator: each was a defect or a suspicion once, and stays as a regression test.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm, symlink, writeFile as fsWriteFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Filestore } from '../shared/runtime.ts';
import type { Backend } from '../shared/backends/types.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { listPending } from '../shared/catalogue/journal.ts';
import { StorageError } from '../shared/errors.ts';
import { Orchestrator } from '../shared/orchestrator/orchestrator.ts';
import { recoverEntry } from '../shared/orchestrator/recovery.ts';
import { ensureDatabase } from '../shared/db/ensure-database.ts';
import { migrate } from '../shared/db/migrate.ts';
import { createTestMount, startFilestore, stopS3, uniqueKey, type BackendKind, type TestMount } from './support/filestore.ts';
import { expectCode, expectExactRollups, journalOf, livePaths, readAll } from './support/assertions.ts';
import { crashIn } from './support/crash.ts';
import { TEST_DATABASE_URL } from './support/env.ts';

const body = (s: string) => Readable.from([Buffer.from(s)]);
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A body that arrives in pieces, so commands overlap while it streams. */
function slowBody(s: string, pieces = 4, delayMs = 15): Readable {
  const chunks = Array.from({ length: pieces }, (_, i) => s.slice((i * s.length) / pieces, ((i + 1) * s.length) / pieces));
  return Readable.from(
    (async function* () {
      for (const c of chunks) {
        await sleep(delayMs);
        yield Buffer.from(c);
      }
    })(),
  );
}

let core: Filestore;
beforeAll(async () => {
  // No recovery sweeps of our own at start: each test resolves exactly its own entries.
  core = await startFilestore({ recover: false, poolSize: 40 });
});
afterAll(async () => {
  await core.close();
  await stopS3();
});

/** Every path storage holds (root included), sorted like livePaths. */
async function storagePaths(backend: Backend): Promise<string[]> {
  const out = [''];
  for await (const e of backend.list('', { recursive: true })) out.push(e.path);
  return out.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/** Resolves the pending journal entries of one mount (what the periodic sweep would do for them). */
async function recoverMine(mountId: string): Promise<string[]> {
  const deps = { pool: core.pool, backends: core.backends, afterCommit: (id: string) => core.cache.invalidateMount(id) };
  const out: string[] = [];
  for (const e of await listPending(core.pool, 0, 10_000)) {
    if (e.mountId !== mountId) continue;
    // A SIGKILLed process's database session can outlive it for a moment on a loaded machine:
    // end the session that still owns the entry, as PostgreSQL soon would.
    await killOwner(e.id);
    out.push(await recoverEntry(deps, e));
  }
  return out;
}

/** Out-of-band change: straight to storage, around Filestore (drift). */
async function writeAround(t: TestMount, backend: Backend, p: string, content: string): Promise<void> {
  if (t.root) await fsWriteFile(path.join(t.root, p), content);
  else await backend.writeFile(p, body(content), { stagingId: `oob-${Date.now()}-${Math.floor(Math.random() * 1e9)}` });
}

/**
 * A pool for a process that will "die": its sessions get terminated, so every client gets an
 * error listener (an unhandled one would crash the test worker).
 */
function doomedPool(max = 5): pg.Pool {
  const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max });
  pool.on('error', () => {});
  pool.on('connect', (c) => c.on('error', () => {}));
  return pool;
}

/** Terminates the database session that owns a journal entry (its process "dies" there). */
async function killOwner(entryId: number): Promise<void> {
  const { rows } = await core.pool.query<{ pid: number }>(
    `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 4242 AND objid = $1 AND objsubid = 2 AND granted`,
    [entryId],
  );
  for (const r of rows) await core.pool.query('SELECT pg_terminate_backend($1, 5000)', [r.pid]);
}

describe.each<BackendKind>(['local', 's3'])('review on %s', (kind) => {
  let t: TestMount;
  let m: string;
  let backend: Backend;
  beforeEach(async () => {
    t = await createTestMount(core, kind);
    m = t.mount.key;
    backend = core.backends.forMount(t.mount);
    return () => t.cleanup();
  });

  // ---------------------------------------------------------------- rollups (coverage)

  it('rollups stay exact: move overwriting a file, between directories of different depths', async () => {
    const o = core.orchestrator;
    await o.writeFile(m, { path: 'a/b/c/deep.txt' }, body('12345'));
    await o.writeFile(m, { path: 'x/old.txt' }, body('1234567890'));
    await o.move(m, { path: 'a/b/c/deep.txt', targetPath: 'x/old.txt', overwrite: true });
    await expectExactRollups(core, t.mount.id);
    await o.move(m, { path: 'x/old.txt', targetPath: 'p/q/r/s/t.txt' });
    await expectExactRollups(core, t.mount.id);
    await o.move(m, { path: 'p/q', targetPath: 'top' });
    await expectExactRollups(core, t.mount.id);
    expect((await core.reader.nodeByPath(m, '')).rollup).toMatchObject({ sizeBytes: 5, fileCount: 1 });
    expect(await livePaths(core, t.mount.id)).toEqual(await storagePaths(backend));
  });

  it('rollups stay exact: overwrite replacing a directory with a file and a file with a directory (move and copy)', async () => {
    const o = core.orchestrator;
    await o.writeFile(m, { path: 'dir/a/1' }, body('111'));
    await o.writeFile(m, { path: 'dir/2' }, body('22'));
    await o.writeFile(m, { path: 'f' }, body('ffff'));
    await o.copy(m, { path: 'f', targetPath: 'dir', overwrite: true }); // file over a tree
    await expectExactRollups(core, t.mount.id);
    await o.writeFile(m, { path: 'tree/x/y' }, body('yyyyy'));
    await o.move(m, { path: 'tree', targetPath: 'f', overwrite: true }); // tree over a file
    await expectExactRollups(core, t.mount.id);
    await o.copy(m, { path: 'f', targetPath: 'dir', overwrite: true }); // tree over a file (copy)
    await o.move(m, { path: 'dir/x/y', targetPath: 'f', overwrite: true }); // file over a tree (move)
    await expectExactRollups(core, t.mount.id);
    expect(await livePaths(core, t.mount.id)).toEqual(await storagePaths(backend));
  });

  it('rollups stay exact: copy of a single file into new parents, mkdir -p of several levels, deletes', async () => {
    const o = core.orchestrator;
    await o.writeFile(m, { path: 'one' }, body('1'));
    await o.copy(m, { path: 'one', targetPath: 'n1/n2/n3/one' });
    await o.mkdir(m, { path: 'm1/m2/m3/m4', parents: true });
    await o.mkdir(m, { path: 'n1/n2/k1/k2', parents: true });
    await expectExactRollups(core, t.mount.id);
    expect((await core.reader.nodeByPath(m, '')).rollup).toMatchObject({ sizeBytes: 2, fileCount: 2, dirCount: 9, childCount: 3 });
    await o.delete(m, { path: 'n1/n2', recursive: true });
    await o.delete(m, { path: 'm1/m2/m3/m4' });
    await expectExactRollups(core, t.mount.id);
    expect(await livePaths(core, t.mount.id)).toEqual(await storagePaths(backend));
  });

  it('rollups stay exact: copy of a tree holding a symlink, then delete of the symlink (local)', async () => {
    if (!t.root) return;
    await core.orchestrator.writeFile(m, { path: 'src/file' }, body('abc'));
    await symlink('/etc/passwd', path.join(t.root, 'src', 'link'));
    await core.orchestrator.copy(m, { path: 'src', targetPath: 'dst' });
    expect(await core.reader.nodeByPath(m, 'dst/link')).toMatchObject({ kind: 'symlink', metadata: { symlinkTarget: '/etc/passwd' } });
    await expectExactRollups(core, t.mount.id);
    await core.orchestrator.delete(m, { path: 'dst/link' });
    await expectExactRollups(core, t.mount.id);
    expect((await core.reader.nodeByPath(m, 'dst')).rollup).toMatchObject({ childCount: 1, fileCount: 1, sizeBytes: 3 });
  });

  // ---------------------------------------------------------------- locks (coverage)

  it('commands racing on one subtree (moves, recursive deletes, writes creating parents, copies) leave catalogue = storage', async () => {
    const o = core.orchestrator;
    await o.writeFile(m, { path: 'w/seed' }, body('seed'));
    const ops: Array<Promise<unknown>> = [];
    for (let i = 0; i < 12; i++) {
      ops.push(o.writeFile(m, { path: `w/sub${i % 3}/f${i}` }, slowBody(`content-${i}`)));
      if (i % 4 === 1) ops.push(o.move(m, { path: 'w', targetPath: `moved${i}/w` }));
      if (i % 4 === 2) ops.push(o.copy(m, { path: 'w', targetPath: `copy${i}`, overwrite: true }));
      if (i % 4 === 3) ops.push(o.delete(m, { path: 'w', recursive: true }));
      if (i % 4 === 0) ops.push(o.mkdir(m, { path: `w/sub${i % 3}/deeper`, parents: true }));
    }
    await Promise.allSettled(ops);
    expect((await journalOf(core, t.mount.id)).filter((j) => j.status === 'pending')).toEqual([]);
    expect(await livePaths(core, t.mount.id)).toEqual(await storagePaths(backend));
    await expectExactRollups(core, t.mount.id);
  });

  // ---------------------------------------------------------------- journal

  it('a storage read failing right after a move reached storage still ends with catalogue and storage agreeing', async () => {
    await core.orchestrator.writeFile(m, { path: 'a/x' }, body('xx'));
    // One transient failure (an S3 503 after retries, a hiccup of the disk) of the stat that
    // follows the move: the move itself is done.
    const b = backend as Backend & { stat: Backend['stat'] };
    const original = b.stat.bind(b);
    let failOnce = true;
    b.stat = async (p: string) => {
      if (failOnce && p === 'new') {
        failOnce = false;
        throw new StorageError('HEAD failed (simulated)');
      }
      return original(p);
    };
    try {
      await core.orchestrator.move(m, { path: 'a/x', targetPath: 'new/x' }).catch(() => undefined);
    } finally {
      b.stat = original;
    }
    expect(await backend.stat('new/x')).not.toBeNull(); // the move happened
    await recoverMine(t.mount.id);
    const [, entry] = await journalOf(core, t.mount.id);
    // Storage decides: the move is on storage, so the entry ends succeeded with the catalogue following.
    expect(await livePaths(core, t.mount.id)).toEqual(await storagePaths(backend));
    expect(entry?.status).toBe('succeeded');
  });

  it('a move refused for its target mount (another mount, an unknown mount) is journaled as failed', async () => {
    const other = await createTestMount(core, kind);
    await core.orchestrator.writeFile(m, { path: 'x' }, body('x'));
    await expectCode(core.orchestrator.move(m, { path: 'x', targetPath: 'x', targetMountId: other.mount.key }), 'NOT_IMPLEMENTED');
    await expectCode(core.orchestrator.copy(m, { path: 'x', targetPath: 'y', targetMountId: 'no-such-mount' }), 'MOUNT_NOT_FOUND');
    await other.cleanup();
    expect((await journalOf(core, t.mount.id)).map((j) => [j.command, j.status])).toEqual([
      ['writeFile', 'succeeded'],
      ['move', 'failed'],
      ['copy', 'failed'],
    ]);
  });

  // ---------------------------------------------------------------- recovery

  it('recovery fails a writeFile that died before storage even when the file drifted meanwhile', async () => {
    await core.orchestrator.writeFile(m, { path: 'f' }, body('original'));
    await writeAround(t, backend, 'f', 'drifted, not by Filestore');
    expect(await crashIn('before-storage', m, { name: 'writeFile', input: { path: 'f' }, content: 'mine' })).toBe('SIGKILL');
    await recoverMine(t.mount.id);
    const entry = (await journalOf(core, t.mount.id))[1];
    const onStorage = await readAll(backend, 'f');
    expect(onStorage).toBe('drifted, not by Filestore');
    // The command's bytes ("mine") never reached storage: it must not be reported succeeded.
    expect(entry?.status).toBe('failed');
  });

  it('recovery of a move (overwrite: false) that died before storage never overwrites an uncatalogued target', async () => {
    await core.orchestrator.writeFile(m, { path: 'src' }, body('source bytes'));
    await writeAround(t, backend, 'dst', 'precious, uploaded straight to storage');
    expect(await crashIn('before-storage', m, { name: 'move', input: { path: 'src', targetPath: 'dst' } })).toBe('SIGKILL');
    await recoverMine(t.mount.id);
    // The move would have failed with ALREADY_EXISTS; recovery redoes it with overwrite: true.
    expect(await readAll(backend, 'dst')).toBe('precious, uploaded straight to storage');
    expect((await journalOf(core, t.mount.id))[1]?.status).toBe('failed');
  });

  it('recovery of a copy (overwrite: false) that died before storage never overwrites an uncatalogued target', async () => {
    await core.orchestrator.writeFile(m, { path: 'src' }, body('source bytes'));
    await writeAround(t, backend, 'dst', 'precious, uploaded straight to storage');
    expect(await crashIn('before-storage', m, { name: 'copy', input: { path: 'src', targetPath: 'dst' } })).toBe('SIGKILL');
    await recoverMine(t.mount.id);
    expect(await readAll(backend, 'dst')).toBe('precious, uploaded straight to storage');
    expect((await journalOf(core, t.mount.id))[1]?.status).toBe('failed');
  });

  it('recovery of a copy that replaced a directory and died after storage completes it', async () => {
    await core.orchestrator.writeFile(m, { path: 's/one' }, body('1'));
    await core.orchestrator.writeFile(m, { path: 't/old' }, body('old'));
    expect(await crashIn('after-storage', m, { name: 'copy', input: { path: 's', targetPath: 't', overwrite: true } })).toBe('SIGKILL');
    expect(await storagePaths(backend)).toEqual(['', 's', 's/one', 't', 't/one']); // the copy happened
    await recoverMine(t.mount.id);
    // matches() treats any directory as unchanged, so the copy is judged "not applied".
    expect(await livePaths(core, t.mount.id)).toEqual(['', 's', 's/one', 't', 't/one']);
    expect((await journalOf(core, t.mount.id))[2]).toMatchObject({ status: 'succeeded', recovered: true });
    await expectExactRollups(core, t.mount.id);
  });

  it('a command on a path with a crashed pending entry first resolves that entry (the copy records the right sha256)', async () => {
    await core.orchestrator.writeFile(m, { path: 'f' }, body('old'));
    expect(await crashIn('after-storage', m, { name: 'writeFile', input: { path: 'f' }, content: 'new bytes' })).toBe('SIGKILL');
    // The crashed entry's locks died with it; nothing stops the next command before the sweep.
    const copy = await core.orchestrator.copy(m, { path: 'f', targetPath: 'g' });
    await recoverMine(t.mount.id);
    const g = await core.reader.nodeByPath(m, 'g');
    expect(await readAll(backend, 'g')).toBe('new bytes');
    expect(copy.node.sha256).toBe(sha('new bytes'));
    expect(g.sha256).toBe(sha('new bytes'));
  });

  it('a move of a tree over a tree that died after storage is completed with exact rollups', async () => {
    await core.orchestrator.writeFile(m, { path: 's/one' }, body('1'));
    await core.orchestrator.writeFile(m, { path: 'deep/er/t/old' }, body('old'));
    expect(await crashIn('after-storage', m, { name: 'move', input: { path: 's', targetPath: 'deep/er/t', overwrite: true } })).toBe('SIGKILL');
    await recoverMine(t.mount.id);
    expect(await livePaths(core, t.mount.id)).toEqual(await storagePaths(backend));
    expect((await journalOf(core, t.mount.id))[2]).toMatchObject({ status: 'succeeded', recovered: true });
    await expectExactRollups(core, t.mount.id);
  });

  // ---------------------------------------------------------------- idempotency

  it('an idempotent retry of a command whose process died before storage runs it', async () => {
    const victim = new Orchestrator({
      pool: doomedPool(),
      backends: core.backends,
      hooks: {
        beforeStorage: async (entryId) => {
          await killOwner(entryId); // the process dies here
          throw new Error('process died');
        },
      },
    });
    const key = `retry-${t.mount.id}`;
    await victim.writeFile(m, { path: 'doc' }, body('payload'), { idempotencyKey: key }).catch(() => undefined);
    expect((await journalOf(core, t.mount.id)).map((j) => j.status)).toEqual(['pending']);
    // The client never got an answer and retries with the same key, as it should.
    const first = await core.orchestrator.writeFile(m, { path: 'doc' }, body('payload'), { idempotencyKey: key });
    const second = await core.orchestrator.writeFile(m, { path: 'doc' }, body('payload'), { idempotencyKey: key });
    expect(second).toEqual(first); // the retry ran; a further retry replays its result
    expect(await readAll(backend, 'doc')).toBe('payload');
    const journal = await journalOf(core, t.mount.id);
    expect(journal.map((j) => [j.status, j.error?.code ?? null])).toEqual([['failed', 'INTERRUPTED'], ['succeeded', null]]);
  });

  it('a replay after a failed command returns the same failure; a different body is a conflict', async () => {
    const key = `fail-${t.mount.id}`;
    await core.orchestrator.writeFile(m, { path: 'v' }, body('1'));
    await expectCode(core.orchestrator.writeFile(m, { path: 'v', expectedVersion: 5 }, body('2'), { idempotencyKey: key }), 'VERSION_MISMATCH');
    await core.orchestrator.writeFile(m, { path: 'v' }, body('3')); // now at version 2... still not 5
    await expectCode(core.orchestrator.writeFile(m, { path: 'v', expectedVersion: 5 }, body('2'), { idempotencyKey: key }), 'VERSION_MISMATCH');
    await expectCode(core.orchestrator.delete(m, { path: 'v' }, { idempotencyKey: key }), 'IDEMPOTENCY_CONFLICT');
    expect((await journalOf(core, t.mount.id)).length).toBe(3);
  });

  it('a replay of a write whose commit was lost (after storage) resolves it and returns the recovered result', async () => {
    const victim = new Orchestrator({ pool: doomedPool(), backends: core.backends, hooks: { afterStorage: (id) => killOwner(id) } });
    const key = `lost-${t.mount.id}`;
    await expectCode(victim.writeFile(m, { path: 'lost/doc' }, body('payload'), { idempotencyKey: key }), 'INTERNAL');
    const r = await core.orchestrator.writeFile(m, { path: 'lost/doc' }, body('payload'), { idempotencyKey: key });
    expect(r.node).toMatchObject({ path: 'lost/doc', sha256: sha('payload'), sizeBytes: 7 });
    await expectExactRollups(core, t.mount.id);
  });
});

describe('review: process-wide', () => {
  it('N concurrent replays of pending entries on a pool of N complete (one connection each)', async () => {
    const t = await createTestMount(core, 'local');
    const victim = new Orchestrator({ pool: doomedPool(), backends: core.backends, hooks: { afterStorage: (id) => killOwner(id) } });
    const keys = [`dl1-${t.mount.id}`, `dl2-${t.mount.id}`];
    for (const [i, key] of keys.entries()) {
      await victim.writeFile(t.mount.key, { path: `f${i}` }, body('x'), { idempotencyKey: key }).catch(() => undefined);
    }
    expect((await journalOf(core, t.mount.id)).map((j) => j.status)).toEqual(['pending', 'pending']);
    // A pool of 2 (createPool sets no connection timeout; one is set here only so the test ends).
    const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 2, connectionTimeoutMillis: 4000 });
    pool.on('error', () => {});
    const o = new Orchestrator({ pool, backends: core.backends });
    try {
      const results = await Promise.allSettled(
        keys.map((key, i) => o.writeFile(t.mount.key, { path: `f${i}` }, body('x'), { idempotencyKey: key })),
      );
      expect(results.map((r) => (r.status === 'rejected' ? String((r.reason as Error).message) : 'ok'))).toEqual(['ok', 'ok']);
    } finally {
      await pool.end().catch(() => undefined);
      await recoverMine(t.mount.id);
      await t.cleanup();
    }
  });

  it('the recovery sweep reaches entries behind 200 it cannot resolve', async () => {
    const db = `filestore_review_${process.pid}`;
    const url = new URL(TEST_DATABASE_URL);
    url.pathname = `/${db}`;
    const admin = new pg.Client({ connectionString: TEST_DATABASE_URL });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await ensureDatabase(url.toString());
    await migrate(url.toString());
    const other = await startFilestore({ databaseUrl: url.toString(), recover: false, relay: false, migrate: false });
    try {
      // A local mount whose disk is offline: each of its pending entries ends in 'error' (retried next sweep).
      const offlineRoot = await mkdtemp(path.join(os.tmpdir(), 'filestore-offline-'));
      const offline = await createMount(other.pool, { key: 'offline', kind: 'local', rootPath: offlineRoot });
      await rm(offlineRoot, { recursive: true, force: true });
      await other.pool.query(
        `INSERT INTO filestore.journal_entries (mount_id, command, request)
         SELECT $1, 'mkdir', jsonb_build_object('path', 'd' || g) FROM generate_series(1, 200) g`,
        [offline.id],
      );
      // A healthy mount with one entry left pending by a crash before storage.
      const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-healthy-'));
      const healthy = await createMount(other.pool, { key: 'healthy', kind: 'local', rootPath: root });
      await other.pool.query(`INSERT INTO filestore.journal_entries (mount_id, command, request) VALUES ($1, 'mkdir', '{"path":"never"}')`, [healthy.id]);
      const outcome = await other.orchestrator.recover();
      expect(outcome.error).toBe(200);
      const { rows } = await other.pool.query(`SELECT status FROM filestore.journal_entries WHERE mount_id = $1`, [healthy.id]);
      expect(rows[0].status).toBe('failed');
      await rm(root, { recursive: true, force: true });
    } finally {
      await other.close();
      await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await admin.end();
    }
  });

  it('the reader never remembers a missing mount: a new mount is found at once', async () => {
    const key = uniqueKey('late');
    await expectCode(core.reader.nodeByPath(key, ''), 'MOUNT_NOT_FOUND');
    const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-late-'));
    try {
      await createMount(core.pool, { key, kind: 'local', rootPath: root });
      const view = await core.reader.nodeByPath(key, '').catch((e) => e);
      expect(view.code ?? 'found').toBe('found');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('the relay republishes a batch whose publication failed (at least once, in order)', async () => {
    const t = await createTestMount(core, 'local');
    const bus = core.bus as { publish: (e: unknown[]) => Promise<void> };
    const original = bus.publish.bind(bus);
    let failures = 1;
    bus.publish = async (events) => {
      if (failures > 0) {
        failures--;
        throw new Error('bus down (simulated)');
      }
      return original(events);
    };
    const seen: Array<{ type: string; seq: number }> = [];
    const unsubscribe = await core.bus.subscribe((e) => {
      if (e.mountId === t.mount.id) seen.push({ type: e.type, seq: e.seq });
    });
    try {
      await core.orchestrator.mkdir(t.mount.key, { path: 'a' });
      await core.orchestrator.mkdir(t.mount.key, { path: 'a/b' });
      for (let i = 0; i < 200 && seen.filter((e) => e.type === 'filestore.command.completed').length < 2; i++) await sleep(25);
    } finally {
      bus.publish = original;
      unsubscribe();
    }
    expect(seen.map((e) => e.type)).toEqual(['filestore.node.created', 'filestore.command.completed', 'filestore.node.created', 'filestore.command.completed']);
    expect(seen.map((e) => e.seq)).toEqual([...seen.map((e) => e.seq)].sort((a, b) => a - b));
    await t.cleanup();
  });
});
