import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { hashToken } from '../../shared/api/auth.ts';
import { serveApi, type ApiServer } from '../../shared/api/serve.ts';
import { createMount } from '../../shared/catalogue/mounts.ts';
import type { Mount } from '../../shared/catalogue/types.ts';
import { commandQueueName } from '../../shared/dispatch/messages.ts';
import { startAgentPresence, type AgentPresence } from '../../shared/dispatch/presence.ts';
import { startCommandWorker, type CommandWorker } from '../../shared/dispatch/worker.ts';
import type { OrchestratorHooks } from '../../shared/orchestrator/context.ts';
import type { Filestore, FilestoreOptions } from '../../shared/runtime.ts';
import { TEST_COMMAND_SECRET } from './command-secret.ts';
import { TEST_REDIS_URL } from './env.ts';
import { startFilestore } from './filestore.ts';
import { bearerFetch } from './bearer-fetch.ts';

/**
 * Processes of a deployment with agents, in one test process: API-only processes (no agent
 * id, no local disks) and agents (an agent id, the command worker, a heartbeat, their own
 * HTTP server), each a real Filestore on the test PostgreSQL and Redis, all accepting one
 * admin token and command secret — as API processes and agents of one deployment share their
 * token list and FILESTORE_COMMAND_SECRET.
 */

export const TOKEN = `fs_${randomBytes(32).toString('base64url')}`;
const tokens = [{ name: 'test-admin', sha256: hashToken(TOKEN), scopes: ['filestore:admin' as const] }];

export const uniqueAgentId = (prefix = 'agent') => `${prefix}-${randomUUID().slice(0, 12)}`;

/** No reconciliation consumer and no recovery sweep at start: other test files' journal entries are theirs to resolve. */
const quiet: Partial<FilestoreOptions> = { recover: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } };

export interface Served {
  core: Filestore;
  server: ApiServer;
  url: string;
  /** fetch on this server with the admin token. */
  call(method: string, p: string, o?: { json?: unknown; body?: BodyInit; headers?: Record<string, string>; redirect?: RequestRedirect }): Promise<Response>;
  close(): Promise<void>;
}

async function serve(core: Filestore): Promise<Served> {
  const server = await serveApi({ core, host: '127.0.0.1', port: 0, tokens, log: () => {} });
  return {
    core,
    server,
    url: server.url,
    call: (method, p, o) => bearerFetch(server.url, TOKEN, method, p, o),
    async close() {
      await server.close();
      await core.close();
    },
  };
}

/**
 * An API-only process: it owns no local mount, so every local mount's commands are dispatched,
 * signed with `secrets` (FILESTORE_COMMAND_SECRET as a list; default the deployment's).
 */
export async function startApiProcess(o: { commandWaitMs?: number; secrets?: string[] } = {}): Promise<Served> {
  return serve(await startFilestore({ ...quiet, agentId: null, commandWaitMs: o.commandWaitMs, commandSecrets: o.secrets ?? [TEST_COMMAND_SECRET] }));
}

export interface AgentProcess extends Served {
  agentId: string;
  presence: AgentPresence;
  worker: CommandWorker | null;
  /** Journal entry ids of the commands this agent's orchestrator ran (its storage step). */
  ran: number[];
  /** What its command worker logged. */
  logs: string[];
}

/**
 * An agent: its Filestore with `agentId`, its HTTP server (registered as its url unless
 * `url: false`), its heartbeat and (unless `worker: false`) the command worker, verifying
 * commands with `secrets` (default the deployment's) by the clock `now` (default Date.now).
 */
export async function startAgentProcess(
  agentId: string,
  o: { url?: boolean; worker?: boolean; hooks?: OrchestratorHooks; heartbeatMs?: number; secrets?: string[]; now?: () => number } = {},
): Promise<AgentProcess> {
  const ran: number[] = [];
  const logs: string[] = [];
  const core = await startFilestore({
    ...quiet,
    agentId,
    commandSecrets: o.secrets ?? [TEST_COMMAND_SECRET],
    hooks: {
      async beforeStorage(entryId) {
        ran.push(entryId);
        await o.hooks?.beforeStorage?.(entryId);
      },
      afterStorage: o.hooks?.afterStorage,
    },
  });
  const served = await serve(core);
  const presence = await startAgentPresence(core.pool, { id: agentId, version: 'test', url: o.url === false ? null : served.url, intervalMs: o.heartbeatMs ?? 1_000 });
  const worker = o.worker === false ? null : await startCommandWorker(core, agentId, { concurrency: 4, now: o.now, log: (l) => logs.push(l) });
  return {
    ...served,
    agentId,
    presence,
    worker,
    ran,
    logs,
    async close() {
      await worker?.close();
      await presence.stop();
      await served.close();
      await removeQueue(agentId, core.queuePrefix);
    },
  };
}

/** Deletes an agent's command queue (under the catalogue's prefix, `core.queuePrefix`) from Redis (test agents are never reused). */
export async function removeQueue(agentId: string, prefix: string): Promise<void> {
  const connection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue(commandQueueName(agentId), { connection, prefix });
  try {
    await queue.obliterate({ force: true });
  } finally {
    await queue.close();
    await connection.quit();
  }
}

/** A local mount on a fresh temp directory, owned by `agentId` (null: no agent). */
export async function agentMount(core: Filestore, agentId: string | null): Promise<{ mount: Mount; root: string; cleanup(): Promise<void> }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'filestore-dispatch-'));
  const mount = await createMount(core.pool, { key: `d-${randomUUID().slice(0, 12)}`, kind: 'local', rootPath: root, agentId });
  return { mount, root, cleanup: () => rm(root, { recursive: true, force: true }) };
}

/** A gate for an orchestrator hook: `hold()` makes the next command stop there until released. */
export class Gate {
  private next: { entered: (entryId: number) => void; opened: Promise<void> } | null = null;

  readonly hook = async (entryId: number): Promise<void> => {
    const held = this.next;
    if (!held) return;
    this.next = null;
    held.entered(entryId);
    await held.opened;
  };

  hold(): { entered: Promise<number>; release(): void } {
    let release = () => {};
    const opened = new Promise<void>((resolve) => {
      release = resolve;
    });
    let entered: (entryId: number) => void = () => {};
    const enteredP = new Promise<number>((resolve) => {
      entered = resolve;
    });
    this.next = { entered, opened };
    return { entered: enteredP, release };
  }
}
