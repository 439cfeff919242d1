// What the shells may use of reconciliation: the engine, audits, job planning. Drift detection
// (the agent's watchers) is in index-drift.ts, the Lambdas' runs in index-lambda.ts, so that
// each process loads its own part.
export { recordS3AuditAges } from './audit-age.ts';
export { startAuditScheduler, type AuditScheduler, type AuditSelection } from './audit-scheduler.ts';
export { planJobs, type JobTarget } from './job-plan.ts';
export { createReconciler } from './reconciler.ts';
export type { AttemptReport } from './worker.ts';
