// Reconciliation runs inside a Lambda (the reconcile and audit handlers): apart from index.ts.
export { reconcilerOptionsFromEnv, requireRunPool, runAudits, type AuditRunOptions, type AuditRunReport } from './lambda-run.ts';
