import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { commandQueueName, type CommandMessage } from '../shared/dispatch/messages.ts';
import { TEST_REDIS_URL } from './support/env.ts';
import { qs } from './support/http.ts';
import { agentMount, removeQueue, startApiProcess, uniqueAgentId, type Served } from './support/dispatch-cluster.ts';
import { spawnAgent, type AgentChild } from './support/dispatch-agent.ts';

// A real agent process, killed with SIGKILL in the middle of a command that an API process
// dispatched to it, then started again: the command completes exactly once.

let api: Served;
const children: AgentChild[] = [];
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  api = await startApiProcess({ commandWaitMs: 20_000 });
});

afterAll(async () => {
  for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  for (const f of cleanups) await f().catch(() => {});
  await api?.close();
});

it('an agent killed after its storage step finishes the command on restart; the caller retrying with its Idempotency-Key gets the result', { timeout: 90_000 }, async () => {
  const agentId = uniqueAgentId('crash');
  const t = await agentMount(api.core, agentId);
  cleanups.push(t.cleanup, () => removeQueue(agentId, api.core.queuePrefix));
  const first = spawnAgent(agentId, { pauseAfterStorage: true });
  children.push(first);
  await first.line(/^ready$/);

  const key = randomUUID();
  const send = () =>
    api.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'crashed/dir', parents: true }, headers: { 'idempotency-key': key } });
  const pending = send();
  const entryId = Number((await first.line(/^paused (\d+)$/))[1]);
  // Storage has the directory; the catalogue does not yet.
  expect((await stat(path.join(t.root, 'crashed/dir'))).isDirectory()).toBe(true);
  expect((await api.call('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'crashed/dir' })}`)).status).toBe(404);

  first.child.kill('SIGKILL');
  expect(await first.exited).toBe('SIGKILL');
  const second = spawnAgent(agentId);
  children.push(second);
  await second.line(/^ready$/);

  // The caller waiting through the crash gets the result, or 202 if the restart outlasted its wait…
  const firstAnswer = await pending;
  expect([200, 202]).toContain(firstAnswer.status);
  await firstAnswer.body?.cancel();
  // …and sending it again with the same key gets the first command's result.
  let result: { journalEntryId: number; node: { path: string; kind: string } } | undefined;
  while (!result) {
    const res = await send();
    if (res.status === 200) result = (await res.json()) as typeof result;
    else expect(res.status, await res.text()).toBe(202);
  }
  expect(result).toMatchObject({ journalEntryId: entryId, node: { path: 'crashed/dir', kind: 'directory' } });

  // The journal entry was resolved (by recovery: the dead agent's storage step had happened),
  // and no second command ran under that key.
  const journal = (await (await api.call('GET', `/v1/journal?${qs({ mountId: t.mount.id, limit: 100 })}`)).json()) as {
    items: Array<{ id: number; command: string; status: string; recovered: boolean; idempotencyKey: string | null }>;
  };
  expect(journal.items.filter((e) => e.command === 'mkdir')).toMatchObject([
    { id: entryId, status: 'succeeded', recovered: true, idempotencyKey: key },
  ]);
  // Storage and catalogue agree.
  const node = (await (await api.call('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'crashed/dir' })}`)).json()) as Record<string, unknown>;
  expect(node).toMatchObject({ kind: 'directory', consistencyState: 'ACTIVE' });
  expect((await stat(path.join(t.root, 'crashed/dir'))).isDirectory()).toBe(true);

  // BullMQ found the killed agent's job stalled and the restarted agent ran it again (a
  // replay): every job of this key completes, none fails.
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue<CommandMessage>(commandQueueName(agentId), { connection: redis, prefix: api.core.queuePrefix });
  try {
    for (;;) {
      const counts = await queue.getJobCounts('wait', 'active', 'failed', 'completed');
      expect(counts.failed).toBe(0);
      if (counts.wait === 0 && counts.active === 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const jobs = await queue.getJobs(['completed']);
    const ofKey = jobs.filter((j) => j.data.context.idempotencyKey === key);
    expect(ofKey.length).toBeGreaterThanOrEqual(2);
    for (const j of ofKey) expect(j.returnvalue).toMatchObject({ ok: true, result: { journalEntryId: entryId } });
    expect(ofKey.some((j) => j.stalledCounter > 0 || j.attemptsStarted > 1)).toBe(true);
  } finally {
    await queue.close();
    await redis.quit();
  }

  second.child.kill('SIGTERM');
  expect(await second.exited).toBe(0);
});
