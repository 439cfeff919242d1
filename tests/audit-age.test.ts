import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgent, type RunningAgent } from '../agent/agent.ts';
import { findJob } from '../shared/catalogue/jobs.ts';
import { updateMount } from '../shared/catalogue/mounts.ts';
import type { Queryable } from '../shared/db/pool.ts';
import { PromMetrics } from '../shared/metrics/prom.ts';
import { recordAuditAges, refreshAuditAges } from '../shared/reconcile/audit-age.ts';
import type { Filestore } from '../shared/runtime.ts';
import { TEST_COMMAND_SECRET } from './support/command-secret.ts';
import { createAgentMount, eventually, startDeployment, uniqueAgentId, type AgentMount, type Deployment } from './support/agent-process.ts';
import { createTestMount, startFilestore, type TestMount } from './support/filestore.ts';

// filestore_audit_age_seconds{mount} (SPEC §7): how long ago the mount's catalogue was last
// checked whole, i.e. since its last finished audit began; since registration before any.

const AGE = 'filestore_audit_age_seconds';

/** The gauge's value for a mount in a Prometheus text; undefined when the mount is not reported. */
function ageIn(text: string, mountKey: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${AGE}{mount="${mountKey}"}`));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

/** Makes the mount look registered two hours ago (no audit has finished since). */
const registeredTwoHoursAgo = (q: Queryable, mountId: string) =>
  q.query(`UPDATE filestore.mounts SET created_at = now() - interval '2 hours' WHERE id = $1`, [mountId]);

describe('the audit age of a mount', () => {
  let core: Filestore;
  const mounts: TestMount[] = [];
  beforeAll(async () => {
    core = await startFilestore({ redisUrl: 'inline', relay: false });
  });
  afterAll(async () => {
    for (const t of mounts) await t.cleanup();
    await core?.close();
  });

  const reconcile = async (mountId: string, recursive: boolean) => {
    const { job } = await core.reconcile.enqueue({ mountId, path: '', reason: 'audit', recursive, hash: false });
    const done = await eventually(async () => {
      const row = await findJob(core.pool, job.id);
      return row && ['succeeded', 'failed'].includes(row.status) ? row : undefined;
    }, `job ${job.id}`);
    expect(done.status).toBe('succeeded');
  };

  it('counts from registration until a complete audit finishes, then from when that audit began', async () => {
    const t = await createTestMount(core, 'local');
    mounts.push(t);
    await registeredTwoHoursAgo(core.pool, t.mount.id);
    const m = new PromMetrics({ collectDefaults: false });
    const measure = async () => {
      await recordAuditAges(core.pool, m, { mountIds: [t.mount.id] });
      return ageIn(await m.text(), t.mount.key);
    };

    expect(await measure()).toBeGreaterThanOrEqual(7200);
    // A reconcile of the root alone checks part of the mount: not an audit.
    await reconcile(t.mount.id, false);
    expect(await measure()).toBeGreaterThanOrEqual(7200);
    await reconcile(t.mount.id, true);
    expect(await measure()).toBeLessThan(3600);
  });

  it('is reported for the selected active mounts only, and a mount paused stops being reported', async () => {
    const [a, b, other] = [await createTestMount(core, 'local'), await createTestMount(core, 'local'), await createTestMount(core, 'local')];
    mounts.push(a, b, other);
    const m = new PromMetrics({ collectDefaults: false });
    const stop = refreshAuditAges({ pool: core.pool, metrics: m, select: { mountIds: [a.mount.id, b.mount.id] }, intervalMs: 50 });
    try {
      await eventually(async () => {
        const text = await m.text();
        return ageIn(text, a.mount.key) !== undefined && ageIn(text, b.mount.key) !== undefined ? true : undefined;
      }, 'both selected mounts to be reported');
      expect(ageIn(await m.text(), other.mount.key)).toBeUndefined();
      await updateMount(core.pool, b.mount.id, { state: 'paused' });
      await eventually(async () => (ageIn(await m.text(), b.mount.key) === undefined ? true : undefined), 'the paused mount to be dropped');
      expect(ageIn(await m.text(), a.mount.key)).toBeGreaterThanOrEqual(0);
    } finally {
      stop();
    }
  });
});

describe("the agent's /metrics", () => {
  let d: Deployment;
  let agent: RunningAgent | undefined;
  const mounts: AgentMount[] = [];
  beforeAll(async () => {
    d = await startDeployment();
  });
  afterAll(async () => {
    await agent?.stop();
    for (const m of mounts) await m.cleanup();
    await d?.close();
  });

  it('reports the audit age of every mount whose audits it schedules, not of other agents’ mounts', { timeout: 60_000 }, async () => {
    const agentId = uniqueAgentId('audit-age');
    const own = await createAgentMount(d, agentId);
    const others = await createAgentMount(d, uniqueAgentId('someone-else'));
    mounts.push(own, others);
    await registeredTwoHoursAgo(d.pool, own.mount.id);
    agent = await startAgent({
      databaseUrl: d.databaseUrl,
      redisUrl: d.redisUrl,
      agentId,
      commandSecrets: [TEST_COMMAND_SECRET],
      host: '127.0.0.1',
      port: 0,
      tokens: [],
      authDisabled: true,
      auditCron: '0 0 1 1 *',
    });
    const url = agent.server.url;
    const text = await eventually(async () => {
      const t = await (await fetch(`${url}/metrics`)).text();
      return ageIn(t, own.mount.key) !== undefined ? t : undefined;
    }, "the agent's mount in /metrics");
    expect(ageIn(text, own.mount.key)).toBeGreaterThanOrEqual(7200);
    expect(ageIn(text, others.mount.key)).toBeUndefined();
  });
});
