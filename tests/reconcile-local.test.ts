import { createHash } from 'node:crypto';
import { mkdir, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import type { Filestore } from '../shared/runtime.ts';
import { reconcileSuite } from './conformance/reconcile-suite.ts';
import { createTestMount, runningRootJob, startFilestore } from './support/filestore.ts';

reconcileSuite('local', async (core) => {
  const mount = await createTestMount(core, 'local');
  const root = mount.root as string;
  const abs = (p: string) => path.join(root, p);
  return {
    mount,
    async write(p, bytes) {
      await mkdir(path.dirname(abs(p)), { recursive: true });
      await writeFile(abs(p), bytes);
    },
    remove: (p) => rm(abs(p), { recursive: true, force: true }),
    mkdir: async (p) => void (await mkdir(abs(p), { recursive: true })),
    async breakRoot() {
      await rename(root, `${root}.unmounted`);
      return () => rename(`${root}.unmounted`, root);
    },
    cleanup: () => mount.cleanup(),
  };
});

describe('local-only reconciliation', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startFilestore();
  });
  afterAll(() => core.close());

  async function run(mountId: string, options: Record<string, unknown>) {
    return createReconciler(core)(await runningRootJob(core, mountId, options), async () => {});
  }

  it('progress reaches the job while the run works and is finished when the run returns; a progress writer that fails does not fail the run', async () => {
    const t = await createTestMount(core, 'local');
    for (let d = 0; d < 5; d++) {
      await mkdir(path.join(t.root as string, `d${d}`));
      await Promise.all(Array.from({ length: 1000 }, (_, f) => writeFile(path.join(t.root as string, `d${d}`, `f${f}`), 'x')));
    }
    const job = () => runningRootJob(core, t.mount.id);
    // A slow writer that then fails: the run goes on, and has waited for it when it returns.
    const reports: number[] = [];
    let started = 0;
    let finished = 0;
    const counts = await createReconciler(core)(await job(), async (c) => {
      started++;
      await new Promise((r) => setTimeout(r, 500));
      finished++;
      reports.push(c.checked);
      throw new Error('the job row cannot be written');
    });
    expect(counts).toMatchObject({ discovered: 5005 });
    expect(started).toBeGreaterThan(0);
    expect(finished).toBe(started);
    expect(reports[0]).toBeGreaterThanOrEqual(2000);
    expect(reports.every((n) => n < counts.checked)).toBe(true);
    // A writer that throws instead of rejecting does not fail the run either.
    let calls = 0;
    const again = await createReconciler(core)(await job(), ((c: unknown) => {
      calls++;
      throw new Error(`cannot record ${JSON.stringify(c).length} bytes`);
    }) as never);
    expect(calls).toBeGreaterThan(0);
    expect(again).toMatchObject({ unchanged: 5006 });
    await t.cleanup();
  });

  it('a content change with identical size and mtime is caught only when hashing', async () => {
    const t = await createTestMount(core, 'local');
    const file = path.join(t.root as string, 'same.bin');
    await core.orchestrator.writeFile(t.mount.id, { path: 'same.bin' }, Readable.from([Buffer.from('AAAA')]));
    const before = await stat(file);
    await writeFile(file, 'BBBB');
    await utimes(file, before.atime, before.mtime);
    expect(await run(t.mount.id, { recursive: true })).toMatchObject({ updated: 0 });
    expect(await run(t.mount.id, { recursive: true, hash: true })).toMatchObject({ updated: 1 });
    const node = await findLiveByPath(core.pool, t.mount.id, 'same.bin');
    expect(node?.sha256).toBe(createHash('sha256').update('BBBB').digest('hex'));
    await t.cleanup();
  });

  it('symlinks are catalogued as kind symlink with their target, never followed', async () => {
    const t = await createTestMount(core, 'local');
    await symlink('/etc', path.join(t.root as string, 'etc-link'));
    expect(await run(t.mount.id, { recursive: true })).toMatchObject({ discovered: 1 });
    const node = await findLiveByPath(core.pool, t.mount.id, 'etc-link');
    expect(node).toMatchObject({ kind: 'symlink', metadata: { symlinkTarget: '/etc' } });
    expect(await findLiveByPath(core.pool, t.mount.id, 'etc-link/passwd')).toBeNull();
    await t.cleanup();
  });

  it('a directory replaced by a symlink: the link is catalogued, what was below it becomes MISSING (never read through the link)', async () => {
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    await core.orchestrator.writeFile(t.mount.id, { path: 'a' }, Readable.from([Buffer.from('')]));
    await mkdir(path.join(root, 'é'));
    await rename(path.join(root, 'a'), path.join(root, 'é', 'x'));
    await run(t.mount.id, { recursive: true, force: true });
    await rm(path.join(root, 'é'), { recursive: true });
    await symlink('a', path.join(root, 'é'));
    await run(t.mount.id, { recursive: true, force: true });
    expect(await findLiveByPath(core.pool, t.mount.id, 'é')).toMatchObject({ kind: 'symlink', consistencyState: 'ACTIVE' });
    expect(await findLiveByPath(core.pool, t.mount.id, 'é/x')).toMatchObject({ consistencyState: 'MISSING' });
    await t.cleanup();
  });
});
