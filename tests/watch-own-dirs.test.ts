import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createWatchBackend } from '../agent/watch/index.ts';
import type { WatchBackendFactory } from '../agent/watch/types.ts';
import type { Filestore } from '../shared/runtime.ts';
import { eventually, nodeAt, outbox, settle, startWatchFilestore, watchedMount, type WatchedMount } from './support/watch-harness.ts';

/**
 * Issue 16 item 10: a command's own directories — `mkdir -p` parents, the directories a put
 * creates on its way — are Filestore's writes: the watcher that sees them appear reports no
 * drift and requests no `drift` reconciliation for them (parcel watches a new directory
 * anew; what it holds is judged by the drift rules, not sent to a blind recursive job).
 */

let core: Filestore;
/** While set, commands wait between their storage write and their catalogue commit (holding their path locks). */
let hold: { reached: () => void; release: Promise<void> } | null = null;
beforeAll(async () => {
  core = await startWatchFilestore({
    async afterStorage() {
      const h = hold;
      if (!h) return;
      h.reached();
      await h.release;
    },
  });
});
afterAll(async () => {
  await core?.close();
});

/** Reconcile jobs of the mount with reason `drift`, at `paths` or below them. */
async function driftJobsUnder(m: WatchedMount, paths: string[]): Promise<string[]> {
  const { rows } = await core.pool.query<{ path: string }>(`SELECT path FROM filestore.reconciliation_jobs WHERE mount_id = $1 AND reason = 'drift' ORDER BY id`, [m.mountId]);
  return rows.map((r) => r.path).filter((p) => paths.some((q) => p === q || p.startsWith(`${q}/`)));
}

async function driftEventsUnder(m: WatchedMount, paths: string[]): Promise<string[]> {
  const events = await outbox(core, m.mountId, 'filestore.drift.detected');
  const named = events.flatMap((e) => [String(e.data.path ?? ''), ...((e.data.paths as string[] | undefined) ?? [])]);
  return named.filter((p) => paths.some((q) => p === q || p.startsWith(`${q}/`)));
}

describe.each(['parcel', 'chokidar', 'dirs'] as const)("a command's own directories (%s)", (backend) => {
  it('mkdir -p a/b/c: no drift event and no drift job for a, a/b, a/b/c', async () => {
    const m = await watchedMount(core, backend);
    try {
      await core.commands.mkdir(m.mountId, { path: 'a/b/c', parents: true });
      // The watcher has judged everything before the sentinel (and what that batch requeued).
      await settle(core, m);
      await m.watcher.flush();
      expect(await driftEventsUnder(m, ['a'])).toEqual([]);
      expect(await driftJobsUnder(m, ['a'])).toEqual([]);
      const { rows } = await core.pool.query(`SELECT path, consistency_state AS state FROM filestore.nodes WHERE mount_id = $1 AND path LIKE 'a%' AND deleted_at IS NULL ORDER BY path`, [m.mountId]);
      expect(rows).toEqual([
        { path: 'a', state: 'ACTIVE' },
        { path: 'a/b', state: 'ACTIVE' },
        { path: 'a/b/c', state: 'ACTIVE' },
      ]);
    } finally {
      await m.close();
    }
  });

  it('put into a new nested directory: no drift event and no drift job for the directories it created', async () => {
    const m = await watchedMount(core, backend);
    try {
      await core.orchestrator.writeFile(m.mountId, { path: 'x/y/z/file.txt' }, Readable.from([Buffer.from('hello')]));
      await settle(core, m);
      await m.watcher.flush();
      // Nor for the staging directory the put wrote its bytes in first (made by this first put).
      expect(await driftEventsUnder(m, ['x', '.filestore-staging'])).toEqual([]);
      expect(await driftJobsUnder(m, ['x', '.filestore-staging'])).toEqual([]);
      expect((await nodeAt(core, m.mountId, 'x/y/z/file.txt'))?.consistencyState).toBe('ACTIVE');
    } finally {
      await m.close();
    }
  });

  it('mkdir -p judged while the command still holds its paths (before its catalogue commit): no drift job once it committed', async () => {
    const m = await watchedMount(core, backend);
    let release!: () => void;
    let reached!: () => void;
    const atStorage = new Promise<void>((r) => (reached = r));
    hold = { reached, release: new Promise<void>((r) => (release = r)) };
    try {
      const made = core.commands.mkdir(m.mountId, { path: 'h/i/j', parents: true });
      await atStorage;
      hold = null;
      // The watcher judges the new directories while the command holds them: deferred, walked.
      await settle(core, m);
      release();
      await made;
      await settle(core, m);
      await m.watcher.flush();
      expect(await driftEventsUnder(m, ['h'])).toEqual([]);
      expect(await driftJobsUnder(m, ['h'])).toEqual([]);
      expect((await nodeAt(core, m.mountId, 'h/i/j'))?.consistencyState).toBe('ACTIVE');
    } finally {
      hold = null;
      release?.();
      await m.close();
    }
  });

  it("a file written from outside into a command's new directory is drift: reported and catalogued", async () => {
    const m = await watchedMount(core, backend);
    try {
      await core.commands.mkdir(m.mountId, { path: 'k/l/m', parents: true });
      await m.writeOutOfBand('k/l/outside.txt', 'not ours');
      await eventually(async () => (await nodeAt(core, m.mountId, 'k/l/outside.txt'))?.consistencyState === 'ACTIVE', 'k/l/outside.txt catalogued');
      expect(await driftEventsUnder(m, ['k/l/outside.txt'])).not.toEqual([]);
      expect(await driftEventsUnder(m, ['k/l/m'])).toEqual([]);
    } finally {
      await m.close();
    }
  });

  it('a directory tree made outside Filestore is still drift: reported and catalogued', async () => {
    const m = await watchedMount(core, backend);
    try {
      await m.writeOutOfBand('out/deep/er/f.txt', 'outside');
      await settle(core, m);
      await m.watcher.flush();
      expect((await driftEventsUnder(m, ['out'])).length).toBeGreaterThan(0);
      await eventually(async () => (await nodeAt(core, m.mountId, 'out/deep/er/f.txt'))?.consistencyState === 'ACTIVE', 'out/deep/er/f.txt catalogued');
    } finally {
      await m.close();
    }
  });
});

describe.each(['parcel', 'chokidar', 'dirs'] as const)('a file the backend never reports, made in a new directory of a command (%s)', (backend) => {
  // What happens under load: the backend reports the directories `mkdir -p` made, but not a
  // file written into one of them before its watch was up. Here the backend drops every
  // event of that file, so only the watcher's look into the new directories can find it.
  const blind: WatchBackendFactory = (kind, root, h) =>
    createWatchBackend(kind, root, { ...h, onEvents: (events) => h.onEvents(events.filter((e) => !e.path.endsWith('unseen.txt'))) });

  it('is found by the look into the new directories: reported and catalogued', async () => {
    const m = await watchedMount(core, backend, { backendFactory: blind });
    try {
      await core.commands.mkdir(m.mountId, { path: 'n/o/p', parents: true });
      await m.writeOutOfBand('n/o/unseen.txt', 'not ours');
      await eventually(async () => (await nodeAt(core, m.mountId, 'n/o/unseen.txt'))?.consistencyState === 'ACTIVE', 'n/o/unseen.txt catalogued');
      expect(await driftEventsUnder(m, ['n/o/unseen.txt'])).not.toEqual([]);
      expect(await driftJobsUnder(m, ['n/o/p'])).toEqual([]);
    } finally {
      await m.close();
    }
  });
});
