/**
 * The read-through cache when one process loses Redis while others keep it (a partition, or a
 * Redis restarted with its data): a commit whose generation bump failed must not leave other
 * processes reading the value from before it until the entry expires (300 s by default).
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RedisReadThroughCache } from '../shared/cache/read-through.ts';
import { TEST_REDIS_URL } from './support/env.ts';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.ts';

let proxy: TcpProxy;
let cut: RedisReadThroughCache;
let other: RedisReadThroughCache;

beforeAll(async () => {
  const target = new URL(TEST_REDIS_URL);
  proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
  cut = new RedisReadThroughCache(`redis://127.0.0.1:${proxy.port}${target.pathname}`);
  other = new RedisReadThroughCache(TEST_REDIS_URL);
});
afterAll(async () => {
  await cut?.close();
  await other?.close();
  await proxy?.close();
});

it('a generation bump that failed during an outage is sent when Redis is back; meanwhile the committing process reads uncached', { timeout: 60_000 }, async () => {
  const mountId = randomUUID();
  let truth = 'v1';
  const load = async () => truth;
  expect(await other.read(mountId, 'node', load)).toBe('v1'); // cached by another process

  await proxy.down();
  truth = 'v2'; // a commit in the process that lost Redis
  await expect(cut.invalidateMount(mountId)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  // That process itself never reads the value from before its own commit.
  expect(await cut.read(mountId, 'node', load)).toBe('v2');

  await proxy.up();
  // Once it reaches Redis again, the bump it owes goes out: the other process reads the truth.
  const deadline = Date.now() + 30_000;
  let seen = await other.read(mountId, 'node', load);
  while (seen !== 'v2' && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    seen = await other.read(mountId, 'node', load);
  }
  expect(seen).toBe('v2');
});
