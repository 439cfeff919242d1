import { FilestoreApiError, apiErrorFrom } from './errors.ts';
import { delay, type Transport } from './transport.ts';
import type { EventEnvelope, EventsOptions, FilestoreEvent } from './types.ts';

/** One message of a text/event-stream (https://html.spec.whatwg.org/multipage/server-sent-events.html). */
export interface SseMessage {
  id: string | undefined;
  event: string | undefined;
  data: string | undefined;
  retry: number | undefined;
}

/**
 * Parses a text/event-stream: `field: value` lines, a blank line ends a message, lines
 * starting with `:` are comments (keep-alives). `retry:` alone is yielded too, with no data.
 */
export async function* parseSse(stream: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let msg: SseMessage = { id: undefined, event: undefined, data: undefined, retry: undefined };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buffer.search(/\r\n|\n|\r(?=[^\n])/)) !== -1) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith('\r\n', nl) ? 2 : 1));
        if (line === '') {
          if (msg.data !== undefined || msg.retry !== undefined || msg.id !== undefined) yield msg;
          msg = { id: undefined, event: undefined, data: undefined, retry: undefined };
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'data') msg.data = msg.data === undefined ? value : `${msg.data}\n${value}`;
        else if (field === 'event') msg.event = value;
        else if (field === 'id' && !value.includes('\0')) msg.id = value;
        else if (field === 'retry' && /^\d+$/.test(value)) msg.retry = Number(value);
      }
      if (done) return; // an unterminated last message is dropped, as the SSE standard says
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

const DEFAULT_RECONNECT_MS = 1000;

/**
 * GET /v1/events/stream as an async iterator. After a dropped connection (or the server
 * ending the stream) it reconnects with Last-Event-ID, and the server replays what was
 * missed: events arrive at least once, in order, with increasing ids. It ends, without an
 * error, when `signal` aborts or the caller breaks out of the loop. A first connection
 * that fails, and an error answer (401, 404…), are thrown.
 *
 * A FilestoreApiError with code RESUME_POINT_EXPIRED (410), on the first connection or on a
 * reconnect, means the server no longer keeps the events after the position (its outbox
 * retention): they cannot be replayed. Open a new stream without `lastEventId` (it starts
 * from now) and catch up by listing again or reconciling; it is never retried.
 */
export async function* streamEvents(t: Transport, o: EventsOptions): AsyncGenerator<FilestoreEvent> {
  let lastId = o.lastEventId;
  let reconnectMs = o.reconnectDelayMs ?? DEFAULT_RECONNECT_MS;
  let opened = false;
  while (!o.signal?.aborted) {
    let res: Response | undefined;
    try {
      res = await t.send({
        method: 'GET',
        path: '/v1/events/stream',
        query: { mountId: o.mountId, types: o.types?.length ? o.types.join(',') : undefined },
        headers: { accept: 'text/event-stream', 'last-event-id': lastId === undefined ? undefined : String(lastId) },
        retry: false,
        signal: o.signal,
      });
    } catch (err) {
      if (o.signal?.aborted) return;
      if (!opened) throw err;
    }
    if (res && !res.ok) {
      // A server restarting behind a proxy answers 502/503 for a while: keep trying; anything
      // else is final (410 RESUME_POINT_EXPIRED: reconnecting could never replay what is gone).
      if (!opened || res.status < 500) throw await apiErrorFrom(res);
      await res.body?.cancel().catch(() => {});
    } else if (res?.body) {
      opened = true;
      o.onOpen?.();
      try {
        for await (const m of parseSse(res.body)) {
          if (m.retry !== undefined && o.reconnectDelayMs === undefined) reconnectMs = m.retry;
          if (o.signal?.aborted) return;
          if (m.data === undefined) {
            // An id without data moves the resume position (the server marks where a stream starts).
            if (m.id !== undefined && /^\d+$/.test(m.id)) lastId = Number(m.id);
            continue;
          }
          const event = toEvent(m);
          lastId = event.id;
          yield event;
        }
        if (o.signal?.aborted) return;
        o.onDisconnect?.(undefined); // the server ended the stream (a restart, a slow reader dropped)
      } catch (err) {
        if (o.signal?.aborted) return;
        if (err instanceof FilestoreApiError) throw err;
        o.onDisconnect?.(err); // the connection dropped: reconnect below
      }
    }
    await delay(reconnectMs, o.signal);
  }
}

function toEvent(m: SseMessage): FilestoreEvent {
  let data: EventEnvelope;
  try {
    data = JSON.parse(m.data ?? '') as EventEnvelope;
  } catch {
    throw new FilestoreApiError({ code: 'UNEXPECTED_RESPONSE', status: 200, message: `event ${m.id ?? '?'}: data is not JSON` });
  }
  const id = m.id !== undefined && /^\d+$/.test(m.id) ? Number(m.id) : data.seq;
  return { id, type: m.event ?? data.type, data };
}
