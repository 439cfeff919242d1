import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { reconcileSuite } from './conformance/reconcile-suite.ts';
import { createTestMount, sharedS3 } from './support/filestore.ts';
import { putRawKey, rawKeys } from './support/s3.ts';

reconcileSuite('s3', async (core) => {
  const mount = await createTestMount(core, 's3');
  const s3 = await sharedS3();
  const bucket = mount.mount.bucket as string;
  const key = (p: string) => `${mount.mount.prefix}${p}`;
  return {
    mount,
    write: (p, bytes) => putRawKey(s3.client, bucket, key(p), bytes),
    async remove(p) {
      const keys = (await rawKeys(s3.client, bucket, key(p))).filter((k) => k === key(p) || k.startsWith(`${key(p)}/`));
      if (keys.length > 0) await s3.client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((Key) => ({ Key })) } }));
    },
    mkdir: (p) => putRawKey(s3.client, bucket, `${key(p)}/`, ''),
    async breakRoot() {
      // Credentials that lost access, or a bucket gone: the mount now names a bucket that does not exist.
      await core.pool.query(`UPDATE filestore.mounts SET bucket = 'no-such-bucket-here', updated_at = now() WHERE id = $1`, [mount.mount.id]);
      return async () => {
        await core.pool.query(`UPDATE filestore.mounts SET bucket = $2, updated_at = now() WHERE id = $1`, [mount.mount.id, bucket]);
      };
    },
    cleanup: () => mount.cleanup(),
  };
});
