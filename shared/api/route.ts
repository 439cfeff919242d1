import type { Readable } from 'node:stream';
import type { z } from 'zod';
import type { Scope, Principal } from './auth.ts';
import type { ApiDeps } from './deps.ts';

/**
 * A route, independent of the transport: the local HTTP server (http-server.ts) and the
 * API Lambda adapt their trigger to an ApiRequest and write the ApiResponse back.
 */
export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface ApiRequest {
  method: string;
  /** The URL path without the query string. */
  path: string;
  /** Query parameters (the first value of each). */
  query: Record<string, string>;
  /** Lower-cased header names. */
  headers: Record<string, string | undefined>;
  /** The raw body; JSON routes read and parse it, upload routes stream it. */
  body: Readable | null;
}

/** One Server-Sent Event. `id` is the outbox sequence number. */
export interface SseMessage {
  id: number;
  event: string;
  data: unknown;
}

export interface SseSink {
  send(message: SseMessage): void;
  comment(text: string): void;
  /** Sets the client's resume position without an event (an SSE message with only an id). */
  position(id: number): void;
  /** True once the client is gone or the stream was stopped. */
  readonly closed: boolean;
  /** Resolves when the client has read what was sent (use between pages of a long replay). */
  ready(): Promise<void>;
  /** Ends the stream; the client reconnects with the last id it got. */
  end(): void;
}

export type ApiResponse =
  | { status: number; headers?: Record<string, string>; json: unknown }
  /** JSON already serialised (e.g. straight from the cache). */
  | { status: number; headers?: Record<string, string>; jsonText: string }
  | { status: number; headers?: Record<string, string>; stream: Readable }
  | { status: number; headers?: Record<string, string>; text: string }
  | {
      status: 200;
      headers?: Record<string, string>;
      /** Starts the event stream; returns the function that stops it (client gone, server closing). */
      sse: (sink: SseSink) => Promise<() => void>;
    };

/** What a handler receives: inputs already validated by the route's schemas. */
export interface RouteInput<Q, P, B> {
  query: Q;
  params: P;
  body: B;
  req: ApiRequest;
  principal: Principal;
  correlationId: string;
  deps: ApiDeps;
}

export interface RouteDefinition<Q extends z.ZodType, P extends z.ZodType, B extends z.ZodType> {
  method: Method;
  /** find-my-way pattern, e.g. `/v1/nodes/:id`. */
  path: string;
  /** Scope the caller needs; null = public (health, readiness, metrics, the API description). */
  scope: Scope | null;
  summary: string;
  tag: string;
  query?: Q;
  params?: P;
  /** A JSON body schema, or 'binary' for a streamed request body. */
  body?: B | 'binary';
  /** Response schemas by status, for the API description. 'binary' and 'sse' describe non-JSON bodies. */
  responses: Record<number, z.ZodType | 'binary' | 'sse' | 'text'>;
  /** Extra headers this route reads, for the API description. */
  headers?: Record<string, string>;
  handle(input: RouteInput<z.infer<Q>, z.infer<P>, z.infer<B>>): Promise<ApiResponse>;
}

/** A route with its types erased, as the router stores it. */
export type Route = RouteDefinition<z.ZodType, z.ZodType, z.ZodType>;

/** Keeps a route's handler typed by its own schemas. */
export function defineRoute<Q extends z.ZodType = z.ZodUndefined, P extends z.ZodType = z.ZodUndefined, B extends z.ZodType = z.ZodUndefined>(
  route: RouteDefinition<Q, P, B>,
): Route {
  return route as unknown as Route;
}

export const json = (status: number, body: unknown, headers?: Record<string, string>): ApiResponse =>
  headers ? { status, json: body, headers } : { status, json: body };
