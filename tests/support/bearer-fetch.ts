/** What a test sends to a server besides method and path. */
export interface FetchOptions {
  /** Sent as the JSON body (content-type application/json). */
  json?: unknown;
  body?: BodyInit;
  /** Win over the token's authorization header. */
  headers?: Record<string, string>;
  redirect?: RequestRedirect;
}

/**
 * fetch on a test server with a bearer token (null: none). Redirects are not followed unless
 * asked; a body is sent half-duplex, so a stream works too.
 */
export function bearerFetch(baseUrl: string, token: string | null, method: string, p: string, o: FetchOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...o.headers };
  let body = o.body;
  if (o.json !== undefined) {
    body = JSON.stringify(o.json);
    headers['content-type'] = 'application/json';
  }
  const init: RequestInit & { duplex?: 'half' } = { method, headers, redirect: o.redirect ?? 'manual' };
  if (body !== undefined) Object.assign(init, { body, duplex: 'half' });
  return fetch(`${baseUrl}${p}`, init);
}
