import { rm, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildOnce, eventually, newcomerEnv, startFilestore, startFolder } from './support/start-process.ts';

// `npm start` follows ./data (SPEC §1, §8): its watcher is on by default, the banner says so,
// and FILESTORE_ENABLE_WATCHERS=false turns it off. Changes are made in ./data around
// Filestore and seen through the API, no reconcile asked for.

let cwd: string;
beforeAll(async () => {
  await buildOnce();
  cwd = await startFolder();
});
afterAll(async () => {
  await rm(cwd, { recursive: true, force: true });
});

interface NodeView {
  sizeBytes: number;
  consistencyState: string;
}

async function byPath(url: string, mountId: string, p: string): Promise<NodeView | null> {
  const res = await fetch(`${url}/v1/nodes/by-path?mountId=${mountId}&path=${encodeURIComponent(p)}`);
  if (res.status === 404) return null;
  if (res.status !== 200) throw new Error(`GET by-path ${p}: ${res.status} ${await res.text()}`);
  return (await res.json()) as NodeView;
}

it('`npm start` watches ./data by default: a file created, changed and deleted there outside Filestore shows in the catalogue without a reconcile', async () => {
  const start = startFilestore(cwd, newcomerEnv());
  try {
    await start.waitFor(/^Ctrl-C stops/m);
    const data = path.join(cwd, 'data');
    expect(start.output()).toContain(`watching ${data}: changes made there outside Filestore are caught as they happen`);
    const url = start.url();
    const mount = (await (await fetch(`${url}/v1/mounts/local`)).json()) as { id: string };

    const file = path.join(data, 'notes.txt');
    await writeFile(file, 'first draft\n');
    expect(await eventually(async () => (await byPath(url, mount.id, 'notes.txt'))?.sizeBytes === 12)).toBe(true);

    await writeFile(file, 'a longer second draft\n');
    expect(await eventually(async () => (await byPath(url, mount.id, 'notes.txt'))?.sizeBytes === 22)).toBe(true);

    await unlink(file);
    expect(await eventually(async () => {
      const node = await byPath(url, mount.id, 'notes.txt');
      return node === null || node.consistencyState === 'MISSING';
    })).toBe(true);
  } finally {
    start.child.kill('SIGTERM');
    expect(await start.exited).toBe(0);
  }
}, 180_000);

it('FILESTORE_ENABLE_WATCHERS=false: the banner says ./data is not watched, and no watcher starts', async () => {
  const start = startFilestore(cwd, newcomerEnv({ FILESTORE_ENABLE_WATCHERS: 'false' }));
  try {
    await start.waitFor(/^Ctrl-C stops/m);
    const data = path.join(cwd, 'data');
    expect(start.output()).toContain(`not watching ${data} (FILESTORE_ENABLE_WATCHERS=false)`);
    expect(start.output()).not.toContain('watching 1 local mount');
    expect(start.output()).not.toMatch(/^watcher local:/m);
  } finally {
    start.child.kill('SIGTERM');
    expect(await start.exited).toBe(0);
  }
}, 180_000);
