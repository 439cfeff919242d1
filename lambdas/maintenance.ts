import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { ScheduledEvent } from 'aws-lambda';
import type { MaintenanceReport } from '../shared/index.ts';
import { recordS3AuditAges } from '../shared/reconcile/index.ts';
import { lambdaHandler, logger } from './support/powertools.ts';

/**
 * The maintenance Lambda, on a schedule (EventBridge, every minute): one maintenance pass
 * of the core per invocation (shared/maintenance.ts) — publish what the outbox owes (rows a
 * frozen container committed but never published), resolve the pending journal entries of S3
 * mounts (local mounts' are their agents'), compact rollups, prune the outbox; and it publishes
 * filestore_audit_age_seconds of every S3 mount (recordS3AuditAges: paused ones 0). The event's
 * content does not matter. A pass with a failed step throws after every step ran: the
 * invocation counts as an error (CloudWatch Errors), and the next one tries again.
 */

// The pass's own figures, beside the core's metrics (EmfMetrics): one EMF document per pass.
const reportMetrics = new Metrics({
  namespace: process.env.POWERTOOLS_METRICS_NAMESPACE || 'Filestore',
  serviceName: process.env.POWERTOOLS_SERVICE_NAME || 'filestore',
});

// The upkeep step's VACUUMs end this long before the invocation's time does (the report and its metrics come after).
const UPKEEP_MARGIN_MS = 30_000;

export const handler = lambdaHandler('maintenance', async (_event: ScheduledEvent | Record<string, unknown>, context, { core }) => {
  // Every minute, whatever the pass does: the S3 mounts' audit ages (paused ones 0), so the
  // AuditAge alarms see a value while audits are due and no data only when this pipeline stops.
  await recordS3AuditAges(core.pool, core.metrics).catch((err: Error) => logger.warn('audit ages not measured', { error: err.message }));
  let report: MaintenanceReport;
  try {
    const left = typeof context?.getRemainingTimeInMillis === 'function' ? context.getRemainingTimeInMillis() : undefined;
    report = await core.maintain(left === undefined ? {} : { deadline: Date.now() + left - UPKEEP_MARGIN_MS });
  } catch (err) {
    logger.error('maintenance pass failed', { error: (err as Error).message });
    throw err;
  }
  logger.info('maintenance pass', { report });
  publishReport(report);
  return report;
});

function publishReport(r: MaintenanceReport): void {
  const count = (name: string, value: number) => reportMetrics.addMetric(name, MetricUnit.Count, value);
  count('filestore_maintenance_events_published', r.published);
  if (r.recovery) {
    count('filestore_maintenance_entries_succeeded', r.recovery.succeeded);
    count('filestore_maintenance_entries_failed', r.recovery.failed);
    count('filestore_maintenance_entries_unresolved', r.recovery.error);
    count('filestore_maintenance_entries_elsewhere', r.recovery.elsewhere);
  }
  count('filestore_maintenance_rollups_compacted', r.compacted);
  count('filestore_maintenance_events_pruned', r.pruned);
  reportMetrics.publishStoredMetrics();
}
