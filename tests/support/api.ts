import { randomBytes } from 'node:crypto';
import { hashToken, type Scope } from '../../shared/api/auth.ts';
import { serveApi, type ServeOptions } from '../../shared/api/serve.ts';
import type { Filestore, FilestoreOptions } from '../../shared/runtime.ts';
import { startFilestore } from './filestore.ts';

export interface TestServer {
  url: string;
  core: Filestore;
  tokens: { read: string; write: string; admin: string };
  close(): Promise<void>;
}

/** A real HTTP API on 127.0.0.1:<random port> over a real Filestore; auth on by default with three tokens. */
export async function startTestServer(
  options: { auth?: boolean; filestore?: Partial<FilestoreOptions>; serve?: Partial<Pick<ServeOptions, 'bodyIdleTimeoutMs'>> } = {},
): Promise<TestServer> {
  // Reconciliation runs in this server's process on an in-process queue that adopts no other
  // test file's leftover jobs (they share the database).
  const core = await startFilestore({ reconcile: { consume: true, queueRedisUrl: 'inline', mountIds: [], s3MissingGraceMs: 10 }, ...options.filestore });
  const tokens = { read: token(), write: token(), admin: token() };
  const entry = (name: keyof typeof tokens, scope: Scope) => ({ name: `test-${name}`, sha256: hashToken(tokens[name]), scopes: [scope] });
  const server = await serveApi({
    core,
    host: '127.0.0.1',
    port: 0,
    tokens: [entry('read', 'filestore:read'), entry('write', 'filestore:write'), entry('admin', 'filestore:admin')],
    authDisabled: options.auth === false,
    log: () => {},
    ...options.serve,
  });
  return {
    url: server.url,
    core,
    tokens,
    async close() {
      await server.close();
      await core.close();
    },
  };
}

const token = () => `fs_${randomBytes(32).toString('base64url')}`;
