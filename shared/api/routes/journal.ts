import { listJournal, type JournalEntry as Entry } from '../../catalogue/journal.ts';
import { listMounts } from '../../catalogue/mounts.ts';
import { FilestoreError } from '../../errors.ts';
import type { Principal } from '../auth.ts';
import { errorFor, seesHostPaths } from '../host-paths.ts';
import { ErrorBody, JournalEntry, JournalEntryParams, JournalQuery, ResolvedEntry, page } from '../schemas.ts';
import { defineRoute, json, type Route } from '../route.ts';

/** An entry as `principal` may see it: the fingerprint never; another's key and host paths for admins only. */
function entryFor({ requestFingerprint: _, ...entry }: Entry, principal: Principal, roots: string[]) {
  if (seesHostPaths(principal)) return entry;
  const error = entry.error && errorFor(entry.error, principal, roots);
  // A key is the means to another's results (a replay answers with them): its sender's alone.
  if (entry.principal === principal.name) return { ...entry, error };
  const { retriedIdempotencyKey: __, ...request } = entry.request;
  return { ...entry, error, idempotencyKey: null, request };
}

/**
 * Command history of a mount, oldest first; `after` is the last entry id already seen. An
 * entry's Idempotency-Key is shown to the principal that sent it and to admins only.
 * `status=pending` without a mount lists every mount's pending entries (admins: what
 * recovery could not resolve), and an admin resolves one by looking at storage.
 */
export const journalRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    path: '/v1/journal',
    scope: 'filestore:read',
    tag: 'journal',
    summary: "Journal entries of a mount (or, with status=pending and the admin scope, of every mount) after an entry id (nextCursor is the id to pass as after)",
    query: JournalQuery,
    responses: { 200: page(JournalEntry), 400: ErrorBody, 403: ErrorBody, 404: ErrorBody },
    async handle({ query, deps, principal }) {
      let mountId: string | null = null;
      let roots: string[] = [];
      if (query.mountId !== undefined) {
        const mount = await deps.core.reader.mount(query.mountId);
        mountId = mount.id;
        roots = mount.rootPath ? [mount.rootPath] : [];
      } else if (query.status !== 'pending') {
        throw new FilestoreError('VALIDATION_ERROR', 'mountId is required (or status=pending, to list the pending entries of every mount)');
      } else if (!seesHostPaths(principal)) {
        throw new FilestoreError('FORBIDDEN', 'listing the pending entries of every mount needs scope filestore:admin; pass mountId for one mount', { requiredScope: 'filestore:admin' });
      } else {
        roots = (await listMounts(deps.core.pool)).flatMap((m) => (m.rootPath ? [m.rootPath] : []));
      }
      const rows = await listJournal(deps.core.pool, mountId, query.after, query.limit + 1, query.status ?? null);
      const items = rows.slice(0, query.limit).map((e) => entryFor(e, principal, roots));
      const last = items[items.length - 1];
      return json(200, { items, nextCursor: rows.length > query.limit && last ? String(last.id) : null });
    },
  }),
  defineRoute({
    method: 'POST',
    path: '/v1/journal/:id/resolve',
    scope: 'filestore:admin',
    tag: 'journal',
    summary: 'Resolve a pending journal entry: storage is looked at, then the entry is recorded succeeded (the effect is there, catalogued) or failed (it is not); nothing is run again',
    params: JournalEntryParams,
    responses: { 200: ResolvedEntry, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody },
    async handle({ params, deps, principal }) {
      const entry = await deps.core.orchestrator.resolvePending(params.id, principal.name).catch(async (err: unknown) => {
        // Another agent's local mount: that agent judges it from its disk, through its command queue.
        if (!(err instanceof FilestoreError) || err.code !== 'RESOLVE_ON_AGENT' || deps.core.commands.redisUrl === 'inline') throw err;
        const mount = await deps.core.reader.mount(String(err.details?.mountId));
        return deps.core.commands.resolveOnAgent(mount, params.id, principal.name);
      });
      return json(200, { outcome: entry.status === 'succeeded' ? 'succeeded' : 'failed', entry: entryFor(entry, principal, []) });
    },
  }),
];
