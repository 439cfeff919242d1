import { performance } from 'node:perf_hooks';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundle, DIST_DIR } from '../../cli/bundle.ts';
import { RESULT_MARKER, type ChildAuditResult, type ChildConfig } from './audit-job.ts';
import { run } from './big-write.ts';

// The child's own entry, which loads what a reconcile worker loads and nothing of the bench
// (its S3 uploads, fauxqs, esbuild): its memory is a worker's.
const CHILD_ENTRY = fileURLToPath(new URL('./audit-child.ts', import.meta.url));
let bundled: Promise<string> | null = null;

/**
 * Runs one audit of `mountId` in a child process and returns what it measured. The child is
 * started as Filestore's long-running processes are (cli/bundle.ts): bundled into plain
 * JavaScript by the same build, run by node alone. Through tsx it would also carry tsx's
 * loader thread and caches (~35 MB), which a worker does not.
 */
export async function spawnAudit(mountId: string, config: ChildConfig): Promise<ChildAuditResult> {
  const outdir = join(DIST_DIR, 'bench');
  bundled ??= bundle({ 'audit-child': CHILD_ENTRY }, outdir).then(() => join(outdir, 'audit-child.js'));
  const script = await bundled;
  const t0 = performance.now();
  const out = await run(process.execPath, [script, mountId, config.databaseUrl, config.redisUrl]);
  const processMs = performance.now() - t0;
  const line = out.split('\n').find((l) => l.startsWith(RESULT_MARKER));
  if (!line) throw new Error(`the audit child printed no result:\n${out}`);
  return { ...(JSON.parse(line.slice(RESULT_MARKER.length)) as Omit<ChildAuditResult, 'processMs'>), processMs };
}
