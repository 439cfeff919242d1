/**
 * Runs one command in a child process and SIGKILLs itself at a chosen point, to test
 * recovery. Usage: CRASH_AT=before-storage|after-storage MOUNT=key COMMAND=json tsx crash-child.ts
 */
import { Readable } from 'node:stream';
import { createFilestore } from '../../shared/runtime.ts';
import { TEST_DATABASE_URL } from './env.ts';
import { TEST_S3_CREDENTIALS } from './s3.ts';

const crashAt = process.env.CRASH_AT;
const die = () => {
  process.kill(process.pid, 'SIGKILL');
  return new Promise<void>(() => {});
};
const fs = await createFilestore({
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
const command = JSON.parse(process.env.COMMAND as string) as { name: string; input: Record<string, unknown>; content?: string };
const mount = process.env.MOUNT as string;
const o = fs.orchestrator;
if (command.name === 'writeFile') await o.writeFile(mount, command.input, Readable.from([Buffer.from(command.content ?? '')]));
else await (o[command.name as 'mkdir' | 'move' | 'copy' | 'delete'] as (m: string, i: unknown) => Promise<unknown>).call(o, mount, command.input);
await fs.close();
process.exit(3); // reaching here means the crash point was never hit
