/**
 * Runs one command in a child process and SIGKILLs itself at a chosen point, to test
 * recovery. Usage: CRASH_AT=before-storage|during-storage|after-storage MOUNT=key COMMAND=json tsx crash-child.ts
 * during-storage: the moment the command puts something in the mount's staging area (a write's
 * temp file, a copy being built, an entry set aside), seen through inotify.
 */
import { watch } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { getMount } from '../../shared/catalogue/mounts.ts';
import { STAGING_DIR } from '../../shared/paths.ts';
import { createFilestore } from '../../shared/runtime.ts';
import { TEST_DATABASE_URL } from './env.ts';
import { TEST_S3_CREDENTIALS } from './s3.ts';

const crashAt = process.env.CRASH_AT;
const die = () => {
  process.kill(process.pid, 'SIGKILL');
  return new Promise<void>(() => {});
};
const core = await createFilestore({
  databaseUrl: TEST_DATABASE_URL,
  redisUrl: 'inline',
  migrate: false,
  recover: false,
  relay: false,
  s3: { credentials: TEST_S3_CREDENTIALS },
  hooks: {
    beforeStorage: crashAt === 'before-storage' ? die : undefined,
    afterStorage: crashAt === 'after-storage' ? die : undefined,
  },
});
const command = JSON.parse(process.env.COMMAND as string) as { name: string; input: Record<string, unknown>; content?: string; sizeBytes?: number };
const mount = process.env.MOUNT as string;
if (crashAt === 'during-storage') {
  const staging = path.join((await getMount(core.pool, mount)).rootPath as string, STAGING_DIR);
  await mkdir(staging, { recursive: true, mode: 0o700 });
  watch(staging, (_event, name) => {
    if (name && /^(j\d+-|copy\.|trash\.)/.test(name)) process.kill(process.pid, 'SIGKILL');
  });
}
/** A body of `sizeBytes` that arrives in 64 KiB chunks (slowly enough to be caught mid-way). */
async function* bigBody(sizeBytes: number) {
  const chunk = Buffer.alloc(64 * 1024, 'x');
  for (let sent = 0; sent < sizeBytes; sent += chunk.length) {
    yield chunk.subarray(0, Math.min(chunk.length, sizeBytes - sent));
    await new Promise((r) => setImmediate(r));
  }
}
const o = core.orchestrator;
if (command.name === 'writeFile') {
  const body = command.sizeBytes !== undefined ? Readable.from(bigBody(command.sizeBytes)) : Readable.from([Buffer.from(command.content ?? '')]);
  await o.writeFile(mount, command.input, body);
}
else await (o[command.name as 'mkdir' | 'move' | 'copy' | 'delete'] as (m: string, i: unknown) => Promise<unknown>).call(o, mount, command.input);
await core.close();
process.exit(3); // reaching here means the crash point was never hit
