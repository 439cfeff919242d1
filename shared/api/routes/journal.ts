import { listJournal } from '../../catalogue/journal.ts';
import { errorFor, seesHostPaths } from '../host-paths.ts';
import { ErrorBody, JournalEntry, JournalQuery, page } from '../schemas.ts';
import { defineRoute, json, type Route } from '../route.ts';

/**
 * Command history of a mount, oldest first; `after` is the last entry id already seen. An
 * entry's Idempotency-Key is shown to the principal that sent it and to admins only.
 */
export const journalRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    path: '/v1/journal',
    scope: 'filestore:read',
    tag: 'journal',
    summary: 'Journal entries of a mount after an entry id (nextCursor is the id to pass as after)',
    query: JournalQuery,
    responses: { 200: page(JournalEntry), 404: ErrorBody },
    async handle({ query, deps, principal }) {
      const mount = await deps.fs.reader.mount(query.mountId);
      const rows = await listJournal(deps.fs.pool, mount.id, query.after, query.limit + 1);
      const admin = seesHostPaths(principal);
      const roots = mount.rootPath ? [mount.rootPath] : [];
      const items = rows.slice(0, query.limit).map(({ requestFingerprint: _, ...entry }) => {
        if (admin) return entry;
        const error = entry.error && errorFor(entry.error, principal, roots);
        // A key is the means to another's results (a replay answers with them): its sender's alone.
        if (entry.principal === principal.name) return { ...entry, error };
        const { retriedIdempotencyKey: __, ...request } = entry.request;
        return { ...entry, error, idempotencyKey: null, request };
      });
      const last = items[items.length - 1];
      return json(200, { items, nextCursor: rows.length > query.limit && last ? String(last.id) : null });
    },
  }),
];
