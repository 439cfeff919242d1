// The audit bench's child process (audit-spawn.ts): one audit of a mount, as a reconcile
// worker runs it, then its measurements on stdout. argv: mountId, databaseUrl, redisUrl.
import { runAuditChild } from './audit-job.ts';

await runAuditChild(process.argv.slice(2));
