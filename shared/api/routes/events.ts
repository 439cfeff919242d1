import { eventsAfter, type EventEnvelope } from '../../catalogue/outbox.ts';
import { prunedThrough } from '../../catalogue/outbox-retention.ts';
import { FilestoreError } from '../../errors.ts';
import { seesHostPaths } from '../host-paths.ts';
import { EventView } from '../host-path-views.ts';
import { ErrorBody, EventsQuery } from '../schemas.ts';
import { defineRoute, type Route } from '../route.ts';

const REPLAY_PAGE = 500;

/**
 * Server-Sent Events. Each event's id is its outbox sequence number; a client that sends
 * Last-Event-ID (browsers' EventSource does on reconnect) first gets every event after it
 * from the outbox, then the live tail, with nothing missed or repeated at the seam.
 * Without Last-Event-ID the stream starts with the next event. A resume point older than what
 * the outbox keeps (FILESTORE_OUTBOX_RETENTION) is 410 RESUME_POINT_EXPIRED, never a silent gap.
 */
export const eventRoutes: Route[] = [
  defineRoute({
    method: 'GET',
    path: '/v1/events/stream',
    scope: 'filestore:read',
    tag: 'events',
    summary: 'Server-Sent Events (ids are sequence numbers; Last-Event-ID resumes without gaps)',
    query: EventsQuery,
    headers: { 'Last-Event-ID': 'resume after this event id' },
    responses: { 200: 'sse', 404: ErrorBody, 410: ErrorBody, 501: ErrorBody },
    async handle({ query, req, deps, principal }) {
      const tail = deps.events;
      if (!tail) throw new FilestoreError('NOT_IMPLEMENTED', 'this endpoint cannot stream events; use the agent or the local server');
      const mount = query.mountId === undefined ? null : await deps.core.reader.mount(query.mountId);
      const types = query.types ? new Set(query.types.split(',').map((t) => t.trim()).filter(Boolean)) : null;
      const header = req.headers['last-event-id'];
      if (header !== undefined && !/^\d{1,15}$/.test(header.trim())) {
        throw new FilestoreError('VALIDATION_ERROR', 'Last-Event-ID: expected the id of an event this stream sent');
      }
      const resumeAfter = header !== undefined ? Number(header) : query.lastEventId;
      if (resumeAfter !== undefined) {
        const pruned = await prunedThrough(deps.core.pool);
        if (resumeAfter < pruned) throw resumePointExpired(resumeAfter, pruned);
      }
      return {
        status: 200,
        async sse(sink) {
          let last = resumeAfter ?? 0;
          // Live events are held until the position to go on from is known (and, resuming, the replay is done).
          let replaying = true;
          const held: EventEnvelope[] = [];
          // The last id the client got. Events filtered out still move `last`; the client hears of
          // it in an id-only message after the batch, or a filtered stream's resume point would
          // stay at its last matching event and fall behind the retention (a false 410).
          let sent = last;
          let positionDue = false;
          const sendPosition = () => {
            positionDue = false;
            if (last > sent && !sink.closed) {
              sink.position(last);
              sent = last;
            }
          };
          // Without filestore:admin, events are shown with host paths redacted (host-path-views.ts).
          const view = seesHostPaths(principal) ? null : new EventView(deps);
          const deliver = (e: EventEnvelope) => {
            if (e.seq <= last) return;
            last = e.seq;
            if ((mount && e.mountId !== mount.id) || (types && !types.has(e.type))) {
              // Once the tail has handed over what it read (its batch is delivered synchronously).
              if (!positionDue && !replaying) {
                positionDue = true;
                setImmediate(sendPosition);
              }
              return;
            }
            sink.send({ id: e.seq, event: e.type, data: view ? view.show(e) : e });
            sent = e.seq;
          };
          // An event that needs its mount's root looked up first waits, and every event after it
          // waits its turn behind it (a stream keeps the order).
          const waiting: EventEnvelope[] = [];
          let draining = false;
          let drained: Promise<void> = Promise.resolve();
          const drain = async () => {
            try {
              while (waiting.length > 0 && !sink.closed) {
                const needed = view?.needs(waiting[0] as EventEnvelope);
                if (needed) await view?.load(needed);
                deliver(waiting.shift() as EventEnvelope);
              }
              waiting.length = 0;
            } finally {
              draining = false; // in the tick that found nothing waiting: no event can slip past
            }
          };
          const accept = (e: EventEnvelope): void => {
            if (!draining && !view?.needs(e)) return deliver(e);
            waiting.push(e);
            if (!draining) {
              draining = true;
              drained = drain().catch(() => {});
            }
          };
          // The tail found the events after its position pruned (it was stalled longer than the
          // retention): the stream ends rather than skip them; its reconnect gets the 410.
          const unsubscribe = await tail.subscribe((e) => (replaying ? void held.push(e) : accept(e)), () => sink.end());
          if (resumeAfter === undefined) {
            // Without Last-Event-ID the stream starts with the next event.
            last = tail.seq;
            replaying = false;
          }
          try {
            while (replaying && !sink.closed) {
              const page = await eventsAfter(deps.core.pool, last, REPLAY_PAGE, mount?.id);
              // Pruned since the check above, events after `last` may be missing from the page:
              // none of it is sent, the stream ends, and the client's reconnect gets the 410.
              const pruned = await prunedThrough(deps.core.pool);
              if (last < pruned) throw resumePointExpired(last, pruned);
              for (const e of page) accept(e);
              await drained; // the next page starts after what this one delivered
              if (page.length < REPLAY_PAGE) replaying = false;
              else await sink.ready();
            }
          } catch (err) {
            unsubscribe();
            throw err;
          }
          for (const e of held) accept(e);
          held.length = 0;
          // A client that reconnects before any event arrived resumes from here, not from "now".
          sink.position(last);
          sent = last;
          return unsubscribe;
        },
      };
    },
  }),
];

function resumePointExpired(lastEventId: number, pruned: number): FilestoreError {
  return new FilestoreError(
    'RESUME_POINT_EXPIRED',
    `cannot resume after event ${lastEventId}: the events up to ${pruned} are no longer kept (the outbox keeps published events for FILESTORE_OUTBOX_RETENTION). ` +
      'Open the stream without Last-Event-ID to start from now, and catch up on what changed meanwhile by listing again (GET /v1/nodes) or reconciling (POST /v1/reconcile).',
    { lastEventId, prunedThrough: pruned },
  );
}
