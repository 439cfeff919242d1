/**
 * The Filestore client: `import { FilestoreClient } from 'filestore/client'`.
 * Node built-ins only at runtime (global fetch); the wire types come from the server's schemas.
 */
export { FilestoreClient, DEFAULT_URL, type FilestoreClientOptions } from './client.ts';
export {
  FilestoreClientError,
  FilestoreApiError,
  FilestoreUnreachableError,
  FilestoreCommandPendingError,
  type ErrorCode,
  type KnownErrorCode,
} from './errors.ts';
export { parseSse, type SseMessage } from './events.ts';
export type * from './types.ts';
