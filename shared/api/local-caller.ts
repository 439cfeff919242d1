import { FilestoreError } from '../errors.ts';

/**
 * Who may call a server that runs without authentication (the loopback default): programs on
 * this machine and the server's own pages — not every web page the user happens to open.
 * - Host must be a loopback name (`localhost`, `127.x.x.x`, `[::1]`, any port): a page whose
 *   DNS name was rebound to 127.0.0.1 sends its own name, and is refused.
 * - Origin, when sent, must be the server's own (`http://` + Host): browsers send it on every
 *   cross-origin request but simple GETs, including the POSTs they send without a preflight.
 * - Sec-Fetch-Site, when sent, must be `same-origin` or `none` (typed in the address bar):
 *   modern browsers send it on every request, simple GETs included.
 * Programs (the CLI, the typed client, curl) send no Origin and no Sec-Fetch-Site.
 * With authentication on none of this applies: a page cannot send a bearer token cross-site
 * without a CORS preflight, which this server never grants.
 */
export function assertLocalCaller(headers: Record<string, string | undefined>): void {
  const host = headers.host;
  if (host !== undefined && !isLoopbackHost(host)) {
    throw refused(`Host "${host.slice(0, 100)}" is not a loopback name (localhost, 127.0.0.1, [::1])`, 'host');
  }
  const origin = headers.origin;
  if (origin !== undefined && (host === undefined || origin.toLowerCase() !== `http://${host.toLowerCase()}`)) {
    throw refused(`a page of another origin (${origin.slice(0, 100)}) may not call it`, 'origin');
  }
  const site = headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') {
    throw refused(`a ${site.slice(0, 20)} request from a web page may not call it`, 'sec-fetch-site');
  }
}

const refused = (why: string, header: string) =>
  new FilestoreError(
    'ORIGIN_NOT_ALLOWED',
    `this server runs without authentication, so it answers only programs on this machine and its own pages: ${why}. ` +
      'Configure tokens (FILESTORE_API_TOKENS) to serve other callers',
    { header },
  );

const IPV4_LOOPBACK = /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

/** `localhost`, `127.x.x.x` or `[::1]`, each with an optional `:port`. */
export function isLoopbackHost(host: string): boolean {
  let name: string;
  let rest: string;
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    if (end === -1) return false;
    name = host.slice(1, end);
    rest = host.slice(end + 1);
  } else {
    const colon = host.indexOf(':');
    name = colon === -1 ? host : host.slice(0, colon);
    rest = colon === -1 ? '' : host.slice(colon);
  }
  if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return false;
  return name.toLowerCase() === 'localhost' || name === '::1' || IPV4_LOOPBACK.test(name);
}
