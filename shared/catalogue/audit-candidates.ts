import type { Queryable } from '../db/pool.ts';
import { NODE_COLUMNS } from './rows.ts';
import type { CatalogueNode } from './types.ts';

/**
 * The MISSING candidates of a full audit that runs in parts (migration 13): nodes absent from
 * storage in the range the audit has scanned, saved with each checkpoint, so the run that
 * completes the scan marks them too (after its second look and the mass-missing rule). They
 * live as long as the job's checkpoint (jobs.ts: saveCheckpoint(null), finishJob, retryLater
 * and stopJob when merged delete them).
 */

/** Saves candidates (by id, at the version the audit compared); a node saved again keeps the later version. */
export async function saveAuditCandidates(q: Queryable, jobId: number, nodes: ReadonlyArray<Pick<CatalogueNode, 'id' | 'version'>>): Promise<void> {
  if (nodes.length === 0) return;
  await q.query(
    `INSERT INTO filestore.audit_missing_candidates (job_id, node_id, version)
     SELECT $1, id, version FROM unnest($2::bigint[], $3::int[]) AS c(id, version)
     ON CONFLICT (job_id, node_id) DO UPDATE SET version = EXCLUDED.version`,
    [jobId, nodes.map((n) => n.id), nodes.map((n) => n.version)],
  );
}

/**
 * The saved candidates that are still what the audit compared: live, at the same version, not
 * MISSING already. A node written since (a command, a reconciliation) is no longer a candidate.
 */
export async function loadAuditCandidates(q: Queryable, jobId: number): Promise<CatalogueNode[]> {
  const { rows } = await q.query<CatalogueNode>(
    `SELECT ${NODE_COLUMNS} FROM filestore.nodes
      WHERE (id, version) IN (SELECT node_id, version FROM filestore.audit_missing_candidates WHERE job_id = $1)
        AND deleted_at IS NULL AND consistency_state <> 'MISSING'
      ORDER BY path`,
    [jobId],
  );
  return rows;
}
