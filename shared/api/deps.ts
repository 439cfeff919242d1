import type { Filestore } from '../runtime.ts';
import type { OutboxTail } from '../events/outbox-tail.ts';
import type { UploadSlots } from './upload-slots.ts';

/** What the routes work with; built once per process (see http-server.ts, and later the API Lambda). */
export interface ApiDeps {
  fs: Filestore;
  /** Follows published events for the event stream; absent where streaming is impossible (Lambda). */
  events?: OutboxTail | undefined;
  /** Prometheus text for GET /metrics; absent where metrics go elsewhere (Lambda: EMF). */
  metrics?: { contentType: string; text(): Promise<string> } | undefined;
  /** Bounds the uploads streaming at once (each holds a database connection while its bytes arrive). */
  uploads: UploadSlots;
  /** Readiness of the process's dependencies by name ("ok" or the problem). */
  readiness(): Promise<Record<string, string>>;
  log(line: string): void;
}
