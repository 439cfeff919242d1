import { InvalidArgumentError } from 'commander';
import { FilestoreError } from '../shared/index.ts';
import { DEFAULT_URL, FilestoreClient } from '../shared/client/index.ts';
import { cliFetch } from './http-fetch.ts';

/**
 * Where a command is aimed: the server (FILESTORE_URL, FILESTORE_TOKEN) and, for most
 * commands, a `MOUNT:PATH` on it.
 */

export interface Target {
  mount: string;
  /** Mount-relative; "" is the mount root. */
  path: string;
}

// Mount keys are ^[a-z0-9][a-z0-9_-]{0,62}$ (a mount id, a UUID, is accepted too): no colon,
// so everything after the first colon is the path, colons included.
const MOUNT = /^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/;

/** `MOUNT:PATH`, or `MOUNT` alone for the mount root. A commander argument parser: bad input is a usage error (exit 2). */
export function parseTarget(value: string): Target {
  const colon = value.indexOf(':');
  const mount = colon === -1 ? value : value.slice(0, colon);
  const path = colon === -1 ? '' : value.slice(colon + 1);
  if (!MOUNT.test(mount)) {
    throw new InvalidArgumentError(`expected MOUNT:PATH (e.g. local:docs/readme.md, or local for the mount root), got "${value}"`);
  }
  return { mount, path: path.replace(/^\/+/, '') };
}

/** `MOUNT:PATH` that must name something below the root (a file, a directory to create…). */
export function parseEntryTarget(value: string): Target {
  const t = parseTarget(value);
  if (t.path === '' || t.path === '/') throw new InvalidArgumentError(`"${value}" is the mount root; name a path inside it, e.g. ${t.mount}:docs`);
  return t;
}

export const showTarget = (t: Target): string => `${t.mount}:${t.path}`;

/** A positive integer argument or option (ids, versions). */
export function parseId(value: string): number {
  if (!/^\d{1,15}$/.test(value)) throw new InvalidArgumentError(`expected a whole number, got "${value}"`);
  return Number(value);
}

/** The API client for this invocation, configured from FILESTORE_URL and FILESTORE_TOKEN. A FILESTORE_URL that is not an http(s) URL is CONFIG_ERROR naming it. */
export function connect(): FilestoreClient {
  const raw = process.env.FILESTORE_URL;
  if (raw !== undefined) {
    let url: URL | null = null;
    try {
      url = new URL(raw);
    } catch {
      // said below
    }
    if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      throw new FilestoreError('CONFIG_ERROR', `FILESTORE_URL is not an http(s) URL: ${JSON.stringify(raw)}; set it to where Filestore listens, e.g. ${DEFAULT_URL}`, { variable: 'FILESTORE_URL', value: raw });
    }
  }
  return new FilestoreClient({ fetch: cliFetch });
}
