import { z } from 'zod';
import { packageVersion } from '../../package.ts';
import { buildOpenApi } from '../openapi.ts';
import { defineRoute, json, type Route } from '../route.ts';
import { commandRoutes } from './commands.ts';
import { eventRoutes } from './events.ts';
import { fileRoutes } from './files.ts';
import { journalRoutes } from './journal.ts';
import { mountRoutes } from './mounts.ts';
import { nodeRoutes } from './nodes.ts';
import { reconcileRoutes } from './reconcile.ts';
import { systemRoutes } from './system.ts';
import { uploadRoutes } from './uploads.ts';

/** Every route of SPEC §4, in one table both the local server and the API Lambda serve. */
export const ROUTES: readonly Route[] = [
  ...systemRoutes,
  ...mountRoutes,
  ...nodeRoutes,
  ...fileRoutes,
  ...uploadRoutes,
  ...commandRoutes,
  ...reconcileRoutes,
  ...journalRoutes,
  ...eventRoutes,
];

let description: Record<string, unknown> | undefined;

(ROUTES as Route[]).push(
  defineRoute({
    method: 'GET',
    path: '/openapi.json',
    scope: null,
    tag: 'system',
    summary: 'This API description (OpenAPI 3.1), generated from the schemas that validate requests',
    responses: { 200: z.object({ openapi: z.string() }).catchall(z.unknown()).describe('an OpenAPI 3.1 document') },
    async handle() {
      description ??= buildOpenApi(ROUTES, packageVersion());
      return json(200, description);
    },
  }),
);
