import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Filestore } from '../shared/runtime.ts';
import { collectEvents, createTestMount, startFilestore, stopS3, type BackendKind } from './support/filestore.ts';
import { expectExactRollups, journalOf, livePaths, readAll } from './support/assertions.ts';
import { crashIn } from './support/crash.ts';

let core: Filestore;
beforeAll(async () => {
  core = await startFilestore({ recover: false });
});
afterAll(async () => {
  await core.close();
  await stopS3();
});

describe.each<BackendKind>(['local', 's3'])('recovery after a crash on %s', (kind) => {
  it('a write that reached storage before the crash is completed and catalogued', async () => {
    const t = await createTestMount(core, kind);
    const events = await collectEvents(core, t.mount.id);
    await core.orchestrator.mkdir(t.mount.key, { path: 'dir' });
    expect(await crashIn('after-storage', t.mount.key, { name: 'writeFile', input: { path: 'dir/new/file.txt' }, content: 'survived' })).toBe('SIGKILL');
    expect((await journalOf(core, t.mount.id)).map((j) => j.status)).toEqual(['succeeded', 'pending']);
    expect(await livePaths(core, t.mount.id)).toEqual(['', 'dir']);

    const outcome = await core.orchestrator.recover();
    expect(outcome.succeeded).toBeGreaterThanOrEqual(1);
    const journal = await journalOf(core, t.mount.id);
    expect(journal[1]).toMatchObject({ status: 'succeeded', recovered: true });
    const node = await core.reader.nodeByPath(t.mount.key, 'dir/new/file.txt');
    expect(node).toMatchObject({ sizeBytes: 8, kind: 'file' });
    expect(await livePaths(core, t.mount.id)).toEqual(['', 'dir', 'dir/new', 'dir/new/file.txt']);
    await events.waitFor((e) => e.type === 'filestore.command.completed' && e.data.recovered === true);
    await expectExactRollups(core, t.mount.id);
    await t.cleanup();
  });

  it('a command that died before storage is marked failed and storage is untouched', async () => {
    const t = await createTestMount(core, kind);
    await core.orchestrator.writeFile(t.mount.key, { path: 'keep.txt' }, Readable.from([Buffer.from('original')]));
    expect(await crashIn('before-storage', t.mount.key, { name: 'writeFile', input: { path: 'keep.txt' }, content: 'replacement' })).toBe('SIGKILL');
    await core.orchestrator.recover();
    const journal = await journalOf(core, t.mount.id);
    expect(journal[1]).toMatchObject({ status: 'failed', recovered: true, error: { code: 'INTERRUPTED' } });
    expect(await readAll(core.backends.forMount(t.mount), 'keep.txt')).toBe('original');
    await t.cleanup();
  });

  it('a move and a delete interrupted after storage are completed', async () => {
    const t = await createTestMount(core, kind);
    const o = core.orchestrator;
    await o.writeFile(t.mount.key, { path: 'a/x' }, Readable.from([Buffer.from('x')]));
    await o.writeFile(t.mount.key, { path: 'b/y' }, Readable.from([Buffer.from('yy')]));
    expect(await crashIn('after-storage', t.mount.key, { name: 'move', input: { path: 'a', targetPath: 'c/a' } })).toBe('SIGKILL');
    expect(await crashIn('after-storage', t.mount.key, { name: 'delete', input: { path: 'b', recursive: true } })).toBe('SIGKILL');
    await o.recover();
    expect((await journalOf(core, t.mount.id)).slice(2).map((j) => j.status)).toEqual(['succeeded', 'succeeded']);
    expect(await livePaths(core, t.mount.id)).toEqual(['', 'c', 'c/a', 'c/a/x']);
    await expectExactRollups(core, t.mount.id);
    await t.cleanup();
  });

  it('an entry whose owner is alive is left alone', async () => {
    const t = await createTestMount(core, kind);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = await startFilestore({ recover: false, relay: false, migrate: false, hooks: { afterStorage: () => gate } });
    const running = slow.orchestrator.mkdir(t.mount.key, { path: 'slow' });
    for (let i = 0; i < 100 && (await journalOf(core, t.mount.id)).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const result = await core.orchestrator.recover();
    expect(result.skipped).toBeGreaterThanOrEqual(1);
    expect((await journalOf(core, t.mount.id))[0]?.status).toBe('pending');
    release();
    await running;
    expect((await journalOf(core, t.mount.id))[0]?.status).toBe('succeeded');
    await slow.close();
    await t.cleanup();
  });
});
