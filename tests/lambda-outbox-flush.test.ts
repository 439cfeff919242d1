/**
 * The outbox flush a Lambda handler does before it returns happens only when the container
 * wrote to the outbox since its last flush: an invocation that committed no event makes no
 * outbox round trip, and rows other containers committed are left to their writer or to the
 * maintenance pass.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { closeLambdaCore } from '../lambdas/support/core.ts';
import { lambdaHandler } from '../lambdas/support/powertools.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import type { Mount } from '../shared/catalogue/types.ts';
import { appendEvents } from '../shared/catalogue/outbox.ts';
import { createPool, type Pool } from '../shared/db/pool.ts';
import type { OutboxRelay } from '../shared/events/relay.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { TEST_DATABASE_URL, TEST_REDIS_URL } from './support/env.ts';
import { lambdaContext } from './support/lambda-context.ts';

const saved = { ...process.env };
let pool: Pool;
let mount: Mount;

beforeAll(async () => {
  pool = createPool(TEST_DATABASE_URL, 2);
  mount = await createMount(pool, { key: `outbox-flush-${randomUUID().slice(0, 8)}`, kind: 's3', bucket: 'b', prefix: 'p/', region: 'us-east-1' });
});
afterEach(async () => {
  await closeLambdaCore();
  process.env = { ...saved };
});
afterAll(async () => {
  await pool.end();
});

function useLambdaEnv(): void {
  for (const k of Object.keys(process.env)) if (k.startsWith('FILESTORE_') || k === 'DATABASE_URL' || k === 'REDIS_URL') delete process.env[k];
  Object.assign(process.env, { DATABASE_URL: TEST_DATABASE_URL, REDIS_URL: TEST_REDIS_URL, FILESTORE_COMMAND_SECRET: TEST_COMMAND_SECRET });
}

async function published(tag: string): Promise<boolean[]> {
  const { rows } = await pool.query<{ published: boolean }>(`SELECT published_at IS NOT NULL AS published FROM filestore.outbox WHERE mount_id = $1 AND data->>'tag' = $2`, [mount.id, tag]);
  return rows.map((r) => r.published);
}

describe('lambdaHandler outbox flush', () => {
  it('an invocation that committed no event makes no outbox pass; a row another container committed is left to maintenance', async () => {
    useLambdaEnv();
    const other = randomUUID();
    let relay: OutboxRelay | null = null;
    const handler = lambdaHandler('reads', async (_e: unknown, _c, lc) => {
      relay = lc.core.relay;
      await lc.core.pool.query('SELECT 1');
      // Another container's commit during this invocation: not this one's to publish.
      await appendEvents(pool, [{ type: 'filestore.node.updated', mountId: mount.id, data: { tag: other } }]);
      return 'ok';
    });
    expect(await handler({}, lambdaContext())).toBe('ok');
    expect((relay as OutboxRelay | null)?.passes).toBe(0);
    expect(await published(other)).toEqual([false]);
    await pool.query(`UPDATE filestore.outbox SET published_at = now() WHERE mount_id = $1 AND data->>'tag' = $2`, [mount.id, other]);
  });

  it('an invocation that committed an event publishes it (with what else is owed); the next one that commits none makes no pass', async () => {
    useLambdaEnv();
    const tag = randomUUID();
    let relay: OutboxRelay | null = null;
    let write = true;
    const handler = lambdaHandler('writes', async (_e: unknown, _c, lc) => {
      relay = lc.core.relay;
      if (write) {
        const client = await lc.core.pool.connect();
        try {
          await client.query('BEGIN');
          await appendEvents(client, [{ type: 'filestore.node.updated', mountId: mount.id, data: { tag } }]);
          await client.query('COMMIT');
        } finally {
          client.release();
        }
      }
      return 'ok';
    });
    await handler({}, lambdaContext());
    // Published before the handler returned; the row's mark may still be on its way (the next claim waits for it).
    await (relay as OutboxRelay | null)?.settled();
    expect(await published(tag)).toEqual([true]);
    const passes = (relay as OutboxRelay | null)?.passes ?? 0;
    expect(passes).toBeGreaterThan(0);
    write = false;
    await handler({}, lambdaContext());
    expect((relay as OutboxRelay | null)?.passes).toBe(passes);
  });
});
