/**
 * An agent process for tests: its Filestore with AGENT_ID, a heartbeat and the command worker
 * (short BullMQ locks, so a job of a killed agent is found stalled quickly). With
 * PAUSE_AFTER_STORAGE=1 every command stops after its storage step, printing
 * `paused <journal entry id>`, until the process is killed. Prints `ready` once consuming;
 * SIGTERM stops it cleanly. Usage: AGENT_ID=… FILESTORE_COMMAND_SECRET=… [PAUSE_AFTER_STORAGE=1] tsx dispatch-agent-child.ts
 */
import { startAgentPresence } from '../../shared/dispatch/presence.ts';
import { startCommandWorker } from '../../shared/dispatch/worker.ts';
import { createFilestore } from '../../shared/runtime.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './env.ts';

const agentId = process.env.AGENT_ID as string;
const pause = process.env.PAUSE_AFTER_STORAGE === '1';
const core = await createFilestore({
  databaseUrl: TEST_DATABASE_URL,
  redisUrl: TEST_REDIS_URL,
  agentId,
  commandSecrets: [process.env.FILESTORE_COMMAND_SECRET as string],
  migrate: false,
  // Other test files' pending entries are theirs: this agent resolves its own through replays.
  recover: false,
  maintenanceIntervalMs: 600_000,
  reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] },
  hooks: {
    afterStorage: pause
      ? async (entryId) => {
          process.stdout.write(`paused ${entryId}\n`);
          await new Promise<void>(() => {});
        }
      : undefined,
  },
});
const presence = await startAgentPresence(core.pool, { id: agentId, version: 'test', intervalMs: 500 });
const worker = await startCommandWorker(core, agentId, { lockDurationMs: 2_000, stalledIntervalMs: 500 });
process.stdout.write('ready\n');
process.once('SIGTERM', () => {
  void (async () => {
    await worker.close();
    await presence.stop();
    await core.close();
    process.exit(0);
  })();
});
