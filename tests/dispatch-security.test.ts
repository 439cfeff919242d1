import { randomBytes, randomUUID } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Queue, WaitingError, Worker, type JobsOptions } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandQueueName, type CommandMessage, type CommandReply } from '../shared/dispatch/messages.ts';
import { CommandSigner } from '../shared/dispatch/signing.ts';
import { startCommandWorker } from '../shared/dispatch/worker.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_REDIS_URL } from './support/env.ts';
import { expectError, qs } from './support/http.ts';
import { parseMetrics, total } from './support/agent-process.ts';
import { agentMount, startAgentProcess, startApiProcess, uniqueAgentId, type AgentProcess, type Served } from './support/dispatch-cluster.ts';

// Anyone who can write to Redis can put a job on an agent's command queue. An agent runs only
// commands signed by an API process of its deployment (FILESTORE_COMMAND_SECRET) for it, and
// not after their expiry; anything else changes nothing and is logged as a security event.

let api: Served;
let agent: AgentProcess;
const cleanups: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  api = await startApiProcess();
  agent = await startAgentProcess(uniqueAgentId('sec'));
});

afterAll(async () => {
  for (const f of cleanups.reverse()) await f().catch(() => {});
  await agent?.close();
  await api?.close();
});

/** A mount of the agent holding `victim.txt`, written through the agent's own API. */
async function mountWithFile(owner: AgentProcess = agent) {
  const t = await agentMount(api.core, owner.agentId);
  cleanups.push(t.cleanup);
  const put = await owner.call('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'victim.txt' })}`, { body: 'precious' });
  expect(put.status, await put.clone().text()).toBe(200);
  return t;
}

/** Puts `data` straight on the agent's command queue, as anyone with access to Redis could, and waits for the worker's reply. */
async function enqueueRaw(agentId: string, data: unknown, opts?: JobsOptions): Promise<CommandReply> {
  const connection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue(commandQueueName(agentId), { connection, prefix: api.core.queuePrefix });
  try {
    const job = await queue.add('delete', data as CommandMessage, opts);
    for (;;) {
      const state = await job.getState();
      if (state === 'completed' || state === 'failed') break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const done = await queue.getJob(job.id as string);
    expect(done?.failedReason ?? null).toBeNull();
    return done?.returnvalue as CommandReply;
  } finally {
    await queue.close();
    await connection.quit();
  }
}

async function securityEvents(kind: string): Promise<number> {
  return total(parseMetrics((await agent.core.metrics.exposition?.text()) ?? '').samples, 'filestore_security_events_total', `kind="${kind}"`);
}

const deleteOf = (mountId: string, p = 'victim.txt'): Omit<CommandMessage, 'agentId' | 'expiresAt' | 'signature'> => ({
  command: 'delete',
  mountId,
  input: { path: p },
  context: { principal: 'test-admin', idempotencyKey: `attack-${randomUUID()}` },
});

const rejections = (reason: string) => agent.logs.filter((l) => l.startsWith('security: rejected dispatched command') && l.includes(reason));

describe('commands on an agent’s queue that no API process of the deployment signed', () => {
  it('a forged delete put straight on the queue (unsigned, signed with another secret, altered, or signed for another agent) leaves the file alone and logs a security event', async () => {
    const t = await mountWithFile();
    const forgedBefore = await securityEvents('command_forged');
    const expiresAt = Date.now() + 60_000;
    const genuine = new CommandSigner([TEST_COMMAND_SECRET]);
    const attacker = new CommandSigner([randomBytes(32).toString('hex')]);
    const prefix = api.core.queuePrefix;
    const signedMkdir = genuine.sign({ command: 'mkdir', mountId: t.mount.id, input: { path: 'harmless' }, context: { idempotencyKey: `k-${randomUUID()}` }, agentId: agent.agentId, expiresAt }, prefix);
    const forgeries: unknown[] = [
      // the message an API process sent before commands were signed
      deleteOf(t.mount.id),
      { ...deleteOf(t.mount.id), agentId: agent.agentId, expiresAt },
      { ...deleteOf(t.mount.id), agentId: agent.agentId, expiresAt, signature: 'AAAA' },
      attacker.sign({ ...deleteOf(t.mount.id), agentId: agent.agentId, expiresAt }, prefix),
      // a genuine message with its command, input or principal changed
      { ...signedMkdir, command: 'delete', input: { path: 'victim.txt' } },
      { ...signedMkdir, input: { path: 'victim.txt' } },
      { ...signedMkdir, context: { ...signedMkdir.context, principal: 'someone-else' } },
      // a genuine message for another agent, moved onto this one's queue
      genuine.sign({ ...deleteOf(t.mount.id), agentId: uniqueAgentId('other'), expiresAt }, prefix),
      // a genuine message for this agent, signed for the queues of another catalogue sharing the secret on this Redis
      genuine.sign({ ...deleteOf(t.mount.id), agentId: agent.agentId, expiresAt }, 'filestore:another-catalogue'),
    ];
    for (const data of forgeries) {
      const reply = await enqueueRaw(agent.agentId, data);
      expect(reply).toMatchObject({ ok: false, error: { code: 'CONFIG_ERROR', message: expect.stringMatching(/FILESTORE_COMMAND_SECRET/) } });
    }
    expect(await readFile(path.join(t.root, 'victim.txt'), 'utf8')).toBe('precious');
    await expect(stat(path.join(t.root, 'harmless'))).rejects.toThrow();
    const journal = (await (await api.call('GET', `/v1/journal?${qs({ mountId: t.mount.id, limit: 100 })}`)).json()) as { items: Array<{ command: string }> };
    expect(journal.items.map((e) => e.command)).toEqual(['writeFile']);
    expect(await securityEvents('command_forged')).toBe(forgedBefore + forgeries.length);
    // One line per rejection naming the agent and the job, never the secret nor a signature.
    const lines = rejections('forged');
    expect(lines.length).toBeGreaterThanOrEqual(forgeries.length);
    for (const l of lines) expect(l).toContain(agent.agentId);
    const logged = agent.logs.join('\n');
    expect(logged).not.toContain(TEST_COMMAND_SECRET);
    expect(logged).not.toContain(signedMkdir.signature);
  });

  it('a job that is not a command message at all is refused as malformed and logged', async () => {
    const before = await securityEvents('command_malformed');
    for (const data of [{ hello: 'world' }, { command: 'delete', mountId: 42 }, 'rm -rf /']) {
      const reply = await enqueueRaw(agent.agentId, data);
      expect(reply).toMatchObject({ ok: false, error: { code: 'CONFIG_ERROR' } });
    }
    expect(await securityEvents('command_malformed')).toBe(before + 3);
    expect(rejections('malformed').length).toBeGreaterThanOrEqual(3);
  });

  it('a genuine command past its expiry, put on the queue again, changes nothing and is logged as expired', async () => {
    const t = await mountWithFile();
    const before = await securityEvents('command_expired');
    const signer = new CommandSigner([TEST_COMMAND_SECRET]);
    const stale = signer.sign({ ...deleteOf(t.mount.id), agentId: agent.agentId, expiresAt: Date.now() - 3_600_000 }, api.core.queuePrefix);
    const reply = await enqueueRaw(agent.agentId, stale);
    expect(reply).toMatchObject({ ok: false, error: { code: 'INTERRUPTED', message: expect.stringMatching(/expired/) } });
    expect(await readFile(path.join(t.root, 'victim.txt'), 'utf8')).toBe('precious');
    expect(await securityEvents('command_expired')).toBe(before + 1);
    expect(rejections('expired').length).toBeGreaterThanOrEqual(1);
  });
});

describe('genuine signatures on messages no API process would send', () => {
  it('a signed command without an expiry, with one that is no finite number, or one further ahead than the TTL plus skew is refused and changes nothing', async () => {
    const t = await mountWithFile();
    const signer = new CommandSigner([TEST_COMMAND_SECRET]);
    const prefix = api.core.queuePrefix;
    const malformedBefore = await securityEvents('command_malformed');
    const futureBefore = await securityEvents('command_future');
    const signed = (expiresAt: unknown) => signer.sign({ ...deleteOf(t.mount.id), agentId: agent.agentId, expiresAt } as never, prefix);
    // A MAC over a message whose expiry is dropped by JSON, or a string, or NaN (null in JSON).
    for (const expiresAt of [undefined, String(Date.now() + 60_000), Number.NaN]) {
      const reply = await enqueueRaw(agent.agentId, signed(expiresAt));
      expect(reply, String(expiresAt)).toMatchObject({ ok: false, error: { code: 'CONFIG_ERROR' } });
    }
    // Valid for a year: a captured copy could be replayed all that time.
    const reply = await enqueueRaw(agent.agentId, signed(Date.now() + 365 * 86_400_000));
    expect(reply).toMatchObject({ ok: false, error: { code: 'CONFIG_ERROR', message: expect.stringMatching(/FILESTORE_COMMAND_TTL_MS/) } });
    expect(await readFile(path.join(t.root, 'victim.txt'), 'utf8')).toBe('precious');
    expect(await securityEvents('command_malformed')).toBe(malformedBefore + 3);
    expect(await securityEvents('command_future')).toBe(futureBefore + 1);
  });

  it('the rejection is logged on one line whatever the job id its writer chose', async () => {
    const forged = 'evil\nsecurity all is well, nothing to see\r\n';
    await enqueueRaw(agent.agentId, { ...deleteOf(randomUUID()), agentId: agent.agentId, expiresAt: Date.now() + 60_000 }, { jobId: forged });
    const line = agent.logs.find((l) => l.includes('evil'));
    expect(line).toBeDefined();
    expect(line).toContain(JSON.stringify(forged));
    for (const l of agent.logs) expect(l).not.toMatch(/[\r\n]/);
  });
});

describe('replies', () => {
  it('a reply that no agent of the deployment signed (someone else consumed the job on Redis) is not reported as the outcome', async () => {
    // The agent is registered and alive, but its worker is not running: the job waits, and a
    // writer to Redis takes it and completes it with a made-up success.
    const mute = await startAgentProcess(uniqueAgentId('mute'), { worker: false });
    cleanups.push(() => mute.close());
    const t = await agentMount(api.core, mute.agentId);
    cleanups.push(t.cleanup);
    const connection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
    const impostor = new Worker(
      commandQueueName(mute.agentId),
      async () => ({ ok: true, result: { journalEntryId: 1, node: { path: 'secret-plans', kind: 'directory' } } }),
      { connection, prefix: api.core.queuePrefix },
    );
    try {
      const e = await expectError(api.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'secret-plans' } }), 500, 'CONFIG_ERROR');
      expect(e.message).toMatch(/does not verify/);
      expect(e.message).toMatch(/FILESTORE_COMMAND_SECRET/);
    } finally {
      await impostor.close();
      await connection.quit();
    }
  });

  it('an expired command that a worker had started before (BullMQ runs a job again after a stall) is not answered "was not run"', async () => {
    const quiet = await startAgentProcess(uniqueAgentId('restarted'), { worker: false });
    cleanups.push(() => quiet.close());
    const t = await mountWithFile(quiet);
    const stale = new CommandSigner([TEST_COMMAND_SECRET]).sign(
      { ...deleteOf(t.mount.id), agentId: quiet.agentId, expiresAt: Date.now() - 3_600_000 },
      api.core.queuePrefix,
    );
    // A worker takes the job and puts it back without finishing it, as one whose agent died would leave it to be run again.
    const connection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
    let handedBack!: () => void;
    const returned = new Promise<void>((r) => (handedBack = r));
    const dying = new Worker(
      commandQueueName(quiet.agentId),
      async (job, token) => {
        await job.moveToWait(token);
        handedBack();
        throw new WaitingError();
      },
      { connection, prefix: api.core.queuePrefix },
    );
    const replying = enqueueRaw(quiet.agentId, stale);
    await returned;
    await dying.close();
    await connection.quit();
    const logs: string[] = [];
    const worker = await startCommandWorker(quiet.core, quiet.agentId, { log: (l) => logs.push(l) });
    cleanups.push(() => worker.close());
    const reply = await replying;
    expect(reply).toMatchObject({ ok: false, error: { code: 'INTERRUPTED' } });
    const message = (reply as { error: { message: string } }).error.message;
    expect(message).not.toMatch(/was not run/);
    expect(message).toMatch(/may have changed storage/);
    expect(message).toMatch(/Idempotency-Key/);
    expect(await readFile(path.join(t.root, 'victim.txt'), 'utf8')).toBe('precious');
  });
});

describe('commands signed by API processes', () => {
  it('a command that waited in the queue past its expiry is not run: its caller gets 503 INTERRUPTED, and sent again it runs', async () => {
    // An agent whose clock reads twenty minutes later than the API process's: every command it
    // takes has waited, as far as it can tell, twenty minutes in its queue (the TTL is 15 min).
    const late = await startAgentProcess(uniqueAgentId('late'), { now: () => Date.now() + 20 * 60_000 });
    cleanups.push(() => late.close());
    const t = await mountWithFile(late);
    const key = randomUUID();
    const send = () => api.call('POST', '/v1/commands/delete', { json: { mountId: t.mount.key, path: 'victim.txt' }, headers: { 'idempotency-key': key } });
    const e = await expectError(send(), 503, 'INTERRUPTED');
    expect(e.message).toMatch(/expired/);
    expect(e.message).toMatch(/Idempotency-Key/);
    expect(await readFile(path.join(t.root, 'victim.txt'), 'utf8')).toBe('precious');
    expect(late.logs.some((l) => l.startsWith('security: rejected dispatched command') && l.includes('expired'))).toBe(true);
    // Nothing was journaled under the key: sending it again to an agent whose clock agrees runs it.
    await late.close();
    const onTime = await startAgentProcess(late.agentId);
    cleanups.push(() => onTime.close());
    const res = await send();
    expect(res.status, await res.text()).toBe(200);
    await expect(stat(path.join(t.root, 'victim.txt'))).rejects.toThrow();
  });

  it('a command that waited five minutes behind a busy agent’s backlog still runs (the expiry bounds replays, not queue waits)', async () => {
    const busy = await startAgentProcess(uniqueAgentId('busy'), { now: () => Date.now() + 5 * 60_000 });
    cleanups.push(() => busy.close());
    const t = await mountWithFile(busy);
    const res = await api.call('POST', '/v1/commands/delete', { json: { mountId: t.mount.key, path: 'victim.txt' } });
    expect(res.status, await res.text()).toBe(200);
    await expect(stat(path.join(t.root, 'victim.txt'))).rejects.toThrow();
  });

  it('an API process with another secret is refused: its caller gets CONFIG_ERROR naming FILESTORE_COMMAND_SECRET, and nothing changes', async () => {
    const stranger = await startApiProcess({ secrets: [randomBytes(32).toString('hex')] });
    cleanups.push(() => stranger.close());
    const t = await mountWithFile();
    const e = await expectError(stranger.call('POST', '/v1/commands/delete', { json: { mountId: t.mount.key, path: 'victim.txt' } }), 500, 'CONFIG_ERROR');
    expect(e.message).toMatch(/FILESTORE_COMMAND_SECRET/);
    expect(await readFile(path.join(t.root, 'victim.txt'), 'utf8')).toBe('precious');
  });

  it('secret rotation: an agent verifying with the new and the old secret accepts commands an API process still signs with the old one', async () => {
    const fresh = randomBytes(32).toString('hex');
    const rotated = await startAgentProcess(uniqueAgentId('rotated'), { secrets: [fresh, TEST_COMMAND_SECRET] });
    cleanups.push(() => rotated.close());
    const t = await mountWithFile(rotated);
    const res = await api.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'old-secret' } });
    expect(res.status, await res.text()).toBe(200);
    expect((await stat(path.join(t.root, 'old-secret'))).isDirectory()).toBe(true);
    // …and one signing with the new secret first is accepted by it too.
    const next = await startApiProcess({ secrets: [fresh, TEST_COMMAND_SECRET] });
    cleanups.push(() => next.close());
    const res2 = await next.call('POST', '/v1/commands/mkdir', { json: { mountId: t.mount.key, path: 'new-secret' } });
    expect(res2.status, await res2.text()).toBe(200);
    // An agent that knows only the new secret refuses the old one's signatures.
    const strict = await startAgentProcess(uniqueAgentId('strict'), { secrets: [fresh] });
    cleanups.push(() => strict.close());
    const t2 = await mountWithFile(strict);
    await expectError(api.call('POST', '/v1/commands/mkdir', { json: { mountId: t2.mount.key, path: 'x' } }), 500, 'CONFIG_ERROR');
    await expect(stat(path.join(t2.root, 'x'))).rejects.toThrow();
  });
});

describe('FILESTORE_COMMAND_SECRET', () => {
  const redis = { FILESTORE_ALLOW_INLINE: 'true', REDIS_URL: 'redis://127.0.0.1:6379/0', DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/x' };
  const secret = randomBytes(32).toString('hex');

  it('is required by an agent (and `filestore start`) on Redis, with a message naming it and how to make one; inline needs none', async () => {
    const { loadConfig } = await import('../shared/config.ts');
    const { agentOptionsFrom } = await import('../agent/main.ts');
    const options = (env: Record<string, string>) => agentOptionsFrom(loadConfig(env), 'postgres://x', () => {});
    expect(() => options(redis)).toThrow(
      expect.objectContaining({ code: 'CONFIG_ERROR', message: expect.stringMatching(/FILESTORE_COMMAND_SECRET.*openssl rand -hex 32/s) }),
    );
    expect(options({ ...redis, FILESTORE_COMMAND_SECRET: secret }).commandSecrets).toEqual([secret]);
    expect(options({ FILESTORE_ALLOW_INLINE: 'true' }).commandSecrets).toBeUndefined();
  });

  it('takes a comma-separated list (the first signs, all verify); a secret shorter than 32 characters is a CONFIG_ERROR that does not echo it', async () => {
    const { loadConfig } = await import('../shared/config.ts');
    const old = randomBytes(32).toString('hex');
    expect(loadConfig({ ...redis, FILESTORE_COMMAND_SECRET: `${secret}, ${old}` }).FILESTORE_COMMAND_SECRET).toEqual([secret, old]);
    for (const bad of ['too-short-a-secret', `${secret},`, `${secret},short`]) {
      let error: unknown;
      try {
        loadConfig({ ...redis, FILESTORE_COMMAND_SECRET: bad });
      } catch (err) {
        error = err;
      }
      expect(error).toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringMatching(/FILESTORE_COMMAND_SECRET.*32/) });
      expect((error as Error).message).not.toContain('too-short');
      expect((error as Error).message).not.toContain(secret);
    }
  });

  it('FILESTORE_COMMAND_TTL_MS sets how long a dispatched command stays valid (15 minutes by default, at least 30 s) for the agent and what it dispatches', async () => {
    const { loadConfig } = await import('../shared/config.ts');
    const { agentOptionsFrom } = await import('../agent/main.ts');
    const env = { ...redis, FILESTORE_COMMAND_SECRET: secret };
    expect(agentOptionsFrom(loadConfig(env), 'postgres://x', () => {}).commandTtlMs).toBe(15 * 60_000);
    expect(agentOptionsFrom(loadConfig({ ...env, FILESTORE_COMMAND_TTL_MS: '3600000' }), 'postgres://x', () => {}).commandTtlMs).toBe(3_600_000);
    for (const bad of ['1000', 'soon', '-5']) {
      expect(() => loadConfig({ ...env, FILESTORE_COMMAND_TTL_MS: bad }), bad).toThrow(
        expect.objectContaining({ code: 'CONFIG_ERROR', message: expect.stringMatching(/FILESTORE_COMMAND_TTL_MS/) }),
      );
    }
  });

  it('a process that dispatches or runs commands through Redis refuses to start without one', async () => {
    const { startFilestore } = await import('./support/filestore.ts');
    await expect(startFilestore({ agentId: null, recover: false, relay: false })).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringMatching(/FILESTORE_COMMAND_SECRET/) });
    await expect(startFilestore({ agentId: 'x', recover: false, relay: false })).rejects.toMatchObject({ code: 'CONFIG_ERROR' });
    const { startCommandWorker } = await import('../shared/dispatch/worker.ts');
    // One that runs every mount itself (no identity) dispatches nothing: it needs no secret, and runs no worker without one.
    const alone = await startFilestore({ recover: false, relay: false, reconcile: { consume: false, queueRedisUrl: 'inline', mountIds: [] } });
    try {
      await expect(startCommandWorker(alone, 'x')).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringMatching(/FILESTORE_COMMAND_SECRET/) });
    } finally {
      await alone.close();
    }
  });

  it('`filestore agent` on Redis without it exits 1 before touching the database, naming the variable', async () => {
    const { spawnSync } = await import('node:child_process');
    const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(FILESTORE_|DATABASE_URL$|REDIS_URL$)/.test(k)));
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'cli/index.ts', 'agent'], {
      // A database that does not exist on a port nothing listens on: the check comes first.
      env: { ...base, REDIS_URL: 'redis://127.0.0.1:6379/0', DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', FILESTORE_AGENT_ID: 'nosecret' },
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/FILESTORE_COMMAND_SECRET/);
    expect(r.stderr).toMatch(/CONFIG_ERROR/);
  });
});
