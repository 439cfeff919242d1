/**
 * Owners beyond 2^31: Linux uids and gids are unsigned 32-bit (an NFS "nobody" is 4294967294;
 * directory services map users to large ids). A file owned by one is catalogued with its ids
 * as they are — by a discovery, by a reconciliation that finds its owner changed, and by a
 * write through Filestore over it — instead of failing the whole batch with "integer out of
 * range".
 */
import { chown, lstat, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findLiveByPath } from '../shared/catalogue/nodes.ts';
import { createReconciler } from '../shared/reconcile/reconciler.ts';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, runningRootJob, startFilestore } from './support/filestore.ts';

const BIG_UID = 3_000_000_000;
const BIG_GID = 4_294_967_294;
const asRoot = process.getuid?.() === 0;

describe.runIf(asRoot)('owners with ids beyond 2^31', () => {
  let core: Filestore;
  beforeAll(async () => {
    core = await startFilestore();
  });
  afterAll(() => core.close());

  const audit = async (mountId: string) => createReconciler(core)(await runningRootJob(core, mountId), async () => {});

  it('are catalogued as they are: discovered, changed, and written over', async () => {
    const t = await createTestMount(core, 'local');
    const root = t.root as string;
    try {
      await mkdir(path.join(root, 'd'));
      await writeFile(path.join(root, 'd', 'a.txt'), 'a');
      await writeFile(path.join(root, 'b.txt'), 'b');
      await chown(path.join(root, 'd', 'a.txt'), BIG_UID, BIG_GID);
      await chown(path.join(root, 'd'), BIG_UID, 0);

      expect(await audit(t.mount.id)).toMatchObject({ discovered: 3, missing: 0 });
      expect(await findLiveByPath(core.pool, t.mount.id, 'd/a.txt')).toMatchObject({ uid: BIG_UID, gid: BIG_GID, consistencyState: 'ACTIVE' });
      expect(await findLiveByPath(core.pool, t.mount.id, 'd')).toMatchObject({ uid: BIG_UID, gid: 0 });

      // The owner changed outside Filestore: found and recorded.
      await chown(path.join(root, 'b.txt'), BIG_GID, BIG_UID);
      expect(await audit(t.mount.id)).toMatchObject({ updated: 1, missing: 0 });
      expect(await findLiveByPath(core.pool, t.mount.id, 'b.txt')).toMatchObject({ uid: BIG_GID, gid: BIG_UID, version: 2 });

      // A write through Filestore into the directory owned by the big id: catalogued as on disk.
      await core.orchestrator.writeFile(t.mount.id, { path: 'd/new.txt' }, Readable.from([Buffer.from('new')]));
      await chown(path.join(root, 'd', 'new.txt'), BIG_UID, BIG_GID);
      expect(await audit(t.mount.id)).toMatchObject({ updated: 1, missing: 0 });
      const st = await lstat(path.join(root, 'd', 'new.txt'));
      expect(await findLiveByPath(core.pool, t.mount.id, 'd/new.txt')).toMatchObject({ uid: st.uid, gid: st.gid });
      expect(st.uid).toBe(BIG_UID);
    } finally {
      await t.cleanup();
    }
  });
});
