import { compactRollups } from './catalogue/rollups.ts';
import { pruneOutbox } from './catalogue/outbox-retention.ts';
import { describeUpkeep, upkeepCatalogue, type UpkeepReport } from './catalogue/catalogue-upkeep.ts';
import type { Pool } from './db/pool.ts';
import type { OutboxRelay } from './events/relay.ts';
import type { Orchestrator } from './orchestrator/orchestrator.ts';
import type { UnresolvedEntry } from './orchestrator/recovery.ts';

/** Entries named in one log line at most; the rest are counted (`filestore journal --pending` lists them all). */
const NAMED_UNRESOLVED = 10;

/** ": mount s3x (UNAVAILABLE: …): entry 12 writeFile "a.txt", …; list and resolve them with …" */
export function describeUnresolved(entries: readonly UnresolvedEntry[]): string {
  if (entries.length === 0) return '';
  const byMount = new Map<string, UnresolvedEntry[]>();
  for (const e of entries.slice(0, NAMED_UNRESOLVED)) byMount.set(e.mountKey, [...(byMount.get(e.mountKey) ?? []), e]);
  const parts = [...byMount].map(([key, es]) => {
    const names = es.map((e) => `entry ${e.id} ${e.command} ${JSON.stringify(e.path)}${e.targetPath !== undefined ? ` -> ${JSON.stringify(e.targetPath)}` : ''}`);
    return `mount ${key} (${es[0]?.reason ?? '?'}): ${names.join(', ')}`;
  });
  const more = entries.length > NAMED_UNRESOLVED ? `; and ${entries.length - NAMED_UNRESOLVED} more` : '';
  return `: ${parts.join('; ')}${more}; list them with \`filestore journal --pending\`, resolve with \`filestore journal resolve ID\` once storage is reachable`;
}

export interface MaintenanceDeps {
  pool: Pool;
  orchestrator: Orchestrator;
  /** null: this process publishes nothing (FilestoreOptions.relay false). */
  relay: OutboxRelay | null;
  /** Judge pending journal entries (FilestoreOptions.recover, default true). */
  recover: boolean;
  outboxRetentionMs: number;
  log(line: string): void;
}

export interface MaintenanceOptions {
  /**
   * Publish what the outbox owes (default true). A process whose relay loop runs passes false:
   * the loop publishes, and a second publisher would only be refused its lock.
   */
  publish?: boolean | undefined;
  /**
   * Run the catalogue upkeep step (default true). startServices' first pass, which a process
   * waits for before it serves, leaves it to the timer's next pass.
   */
  upkeep?: boolean | undefined;
  /** Epoch ms by which the upkeep step has finished (a Lambda's time less a margin); none by default. */
  deadline?: number | undefined;
}

/** What one pass did, for logs and the maintenance Lambda's answer. */
export interface MaintenanceReport {
  /** Outbox rows published by this pass (rows committed before it, by any process). */
  published: number;
  /** Pending journal entries by outcome; `elsewhere`: another agent's local mount (recoversHere). Null when recovery is off. */
  recovery: { succeeded: number; failed: number; skipped: number; error: number; elsewhere: number } | null;
  /** Rollup deltas folded into their rows. */
  compacted: number;
  /** Published events older than the retention, deleted. */
  pruned: number;
  /** What the catalogue upkeep did where autovacuum had not (catalogue-upkeep.ts); null: the step failed or did not run. */
  upkeep: UpkeepReport | null;
}

/**
 * One maintenance pass, what long-running processes run on their timer and the maintenance
 * Lambda once per invocation: publish what the outbox owes (a frozen container's rows), resolve
 * the pending journal entries this process may judge, publish what that resolved, compact
 * rollups, prune the outbox, then vacuum and analyse the catalogue's tables where autovacuum
 * has not (catalogue-upkeep.ts). Every step runs even when an earlier one failed (Redis away must
 * not stop recovery); the pass then rejects with the failures.
 */
export async function maintenancePass(d: MaintenanceDeps, o: MaintenanceOptions = {}): Promise<MaintenanceReport> {
  const report: MaintenanceReport = { published: 0, recovery: null, compacted: 0, pruned: 0, upkeep: null };
  const failures: Error[] = [];
  const step = async (name: string, run: () => Promise<void>) => {
    try {
      await run();
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      failures.push(new Error(`${name}: ${e.message}`, { cause: e }));
    }
  };
  const relay = o.publish === false ? null : d.relay;
  const publish = async () => {
    if (relay) report.published += await relay.flush();
  };

  await step('publishing the outbox', publish);
  if (d.recover) {
    await step('recovery', async () => {
      const unresolved: UnresolvedEntry[] = [];
      const r = await d.orchestrator.recover((e) => unresolved.push(e));
      report.recovery = r;
      if (r.succeeded + r.failed + r.error > 0) {
        d.log(`recovery: ${r.succeeded} completed, ${r.failed} marked failed, ${r.error} unresolved (storage unreachable; retried)${describeUnresolved(unresolved)}`);
      }
    });
    // What recovery committed goes out in this pass, not in the next one.
    const r = report.recovery;
    if (r && r.succeeded + r.failed > 0) await step('publishing the outbox', publish);
    // What finished entries left in S3 staging (late PUTs to upload URLs, failed clean-ups).
    await step('S3 staging sweep', async () => {
      const s = await d.orchestrator.sweepUploadStaging();
      if (s.removed + s.failed > 0) d.log(`S3 staging sweep: removed ${s.removed} object(s) of finished commands, ${s.failed} deletion(s) failed (retried next pass)`);
      for (const line of s.skipped) d.log(`S3 staging sweep skipped ${line}`);
    });
  }
  await step('rollup compaction', async () => {
    report.compacted = await compactRollups(d.pool);
  });
  await step('outbox pruning', async () => {
    const pruned = await pruneOutbox(d.pool, { retentionMs: d.outboxRetentionMs });
    report.pruned = pruned.deleted;
    if (pruned.deleted > 0) d.log(`outbox: deleted ${pruned.deleted} published events older than the retention (through seq ${pruned.prunedThrough})`);
  });
  // Last: what pruning and compaction left dead is vacuumed in the same pass.
  if (o.upkeep !== false) await step('catalogue upkeep', async () => {
    report.upkeep = await upkeepCatalogue(d.pool, { deadline: o.deadline });
    const line = describeUpkeep(report.upkeep);
    if (line) d.log(line);
  });
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) throw new AggregateError(failures, failures.map((f) => f.message).join('; '));
  return report;
}
