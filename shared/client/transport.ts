import { FilestoreApiError, FilestoreUnreachableError, apiErrorFrom, isUnreachable, networkErrorCode } from './errors.ts';

export type Query = Record<string, string | number | boolean | undefined>;

export interface SendOptions {
  method: string;
  path: string;
  query?: Query;
  headers?: Record<string, string | undefined>;
  /**
   * The body, made afresh for each attempt; return null when it cannot be made again
   * (a stream already consumed), which stops further attempts.
   */
  body?: () => unknown;
  /** Send again after a connection lost before any answer (safe for GETs and for commands with an Idempotency-Key). */
  retry: boolean;
  signal?: AbortSignal | undefined;
  redirect?: 'follow' | 'manual';
  /** An absolute URL instead of baseUrl + path + query: a Filestore agent the server redirected to (the token goes along). */
  url?: string | undefined;
}

export interface TransportOptions {
  baseUrl: string;
  token: string | undefined;
  fetch: typeof fetch;
}

/** Attempts after the first for a request lost in flight (SPEC: commands replay by Idempotency-Key). */
export const MAX_RETRIES = 2;
const RETRY_DELAY_MS = 150;

/** HTTP plumbing of the client: URLs, auth, JSON, error bodies, retries of lost requests. */
export class Transport {
  readonly baseUrl: string;
  readonly #token: string | undefined;
  readonly #fetch: typeof fetch;

  constructor(o: TransportOptions) {
    this.baseUrl = o.baseUrl.replace(/\/+$/, '');
    this.#token = o.token;
    this.#fetch = o.fetch;
  }

  url(path: string, query?: Query): string {
    const u = new URL(this.baseUrl + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u.toString();
  }

  /** Sends a request and returns whatever the server answered (any status). */
  async send(o: SendOptions): Promise<Response> {
    const url = o.url ?? this.url(o.path, o.query);
    const headers: Record<string, string> = {};
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    for (const [k, v] of Object.entries(o.headers ?? {})) if (v !== undefined) headers[k.toLowerCase()] = v;
    let lost: { code: string | undefined; err: unknown } | undefined;
    for (let attempt = 0; ; attempt++) {
      const body = o.body?.();
      if (body === null && lost) throw new FilestoreUnreachableError(this.baseUrl, lost.code, lost.err);
      try {
        const init = { method: o.method, headers, body: body as RequestInit['body'], signal: o.signal, redirect: o.redirect ?? 'follow', duplex: 'half' };
        return await this.#fetch(url, init as RequestInit);
      } catch (err) {
        if (o.signal?.aborted) throw err;
        const code = networkErrorCode(err);
        if (isUnreachable(code) || !o.retry || attempt >= MAX_RETRIES) throw new FilestoreUnreachableError(this.baseUrl, code, err);
        lost = { code, err };
        await delay(RETRY_DELAY_MS * 2 ** attempt, o.signal);
      }
    }
  }

  /** A GET to a URL the server redirected to (a presigned S3 URL): without the bearer token. */
  async sendExternal(url: string, headers: Record<string, string | undefined>, signal?: AbortSignal): Promise<Response> {
    const clean: Record<string, string> = {};
    for (const [k, v] of Object.entries(headers)) if (v !== undefined) clean[k] = v;
    try {
      return await this.#fetch(url, { headers: clean, signal });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new FilestoreUnreachableError(new URL(url).origin, networkErrorCode(err), err);
    }
  }

  /** Sends a request and reads its JSON answer; an error status becomes FilestoreApiError. */
  async json<T>(o: Omit<SendOptions, 'retry' | 'body'> & { retry?: boolean; json?: unknown; okStatus?: number[] }): Promise<T> {
    const hasBody = o.json !== undefined;
    const res = await this.send({
      ...o,
      retry: o.retry ?? o.method === 'GET',
      headers: { accept: 'application/json', ...(hasBody ? { 'content-type': 'application/json' } : {}), ...o.headers },
      body: hasBody ? () => JSON.stringify(o.json) : undefined,
    });
    return readJson<T>(res, o.okStatus);
  }
}

/** The JSON body of a successful response; an error status becomes FilestoreApiError. */
export async function readJson<T>(res: Response, okStatus?: number[]): Promise<T> {
  if (okStatus ? !okStatus.includes(res.status) : !res.ok) throw await apiErrorFrom(res);
  const text = await res.text();
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new FilestoreApiError({
      code: 'UNEXPECTED_RESPONSE',
      status: res.status,
      message: `expected JSON from ${res.url || 'the server'}, got ${text.slice(0, 80)}…`,
    });
  }
}

export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
