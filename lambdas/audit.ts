import { z } from 'zod';
import { FilestoreError } from '../shared/index.ts';
import { reconcilerOptionsFromEnv, requireRunPool, runAudits, type AuditRunOptions, type AuditRunReport } from '../shared/reconcile/index-lambda.ts';
import { sqsRouted } from '../shared/queues/index-sqs.ts';
import { lambdaHandler, logger } from './support/powertools.ts';

/** EventBridge Scheduler's input for this target: one mount (id or key), or none for every active S3 mount. */
const AuditEvent = z.object({ mountId: z.string().min(1).optional() });

export interface AuditHandlerOptions extends AuditRunOptions {
  /** Stop when fewer than this remain of the invocation (default 60 000 ms). */
  marginMs?: number | undefined;
}

/**
 * SPEC §10 lambdas/audit.ts: claims or resumes the mount's audit job (one invocation per mount
 * at a time), works until fewer than 60 s remain, checkpoints, returns; the next scheduled
 * invocation continues. Sets filestore_audit_age_seconds{mount}, published with the invocation.
 */
export function createAuditHandler(o: AuditHandlerOptions = {}) {
  return lambdaHandler<unknown, AuditRunReport>('audit', async (event, context, lc) => {
    const parsed = AuditEvent.safeParse(event ?? {});
    if (!parsed.success) throw new FilestoreError('VALIDATION_ERROR', `the audit event is {"mountId"?: "<mount id or key>"}: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
    // With the SQS reconcile queue, follow-ups of S3 mounts go there, and jobs of S3 mounts left
    // without a message (a send that failed, a run killed after its last delivery) get one here.
    requireRunPool(lc.core, 'audit');
    const routed = sqsRouted(lc.core);
    const core = routed?.core ?? lc.core;
    const swept = await routed?.queue.sweep().catch((e: Error) => logger.warn('reconcile jobs without a message not sent', { error: e.message }));
    if (swept) logger.info('reconcile jobs without a message sent', { count: swept });
    const reconciler = { ...reconcilerOptionsFromEnv(), ...o.reconciler };
    const report = await runAudits(core, parsed.data, { remainingMs: () => context.getRemainingTimeInMillis(), marginMs: o.marginMs }, { ...o, reconciler });
    logger.info('audit', { mounts: report.mounts });
    return report;
  });
}

export const handler = createAuditHandler();
