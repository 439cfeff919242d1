import { z } from 'zod';
import type { Route } from './route.ts';
import { ErrorBody } from './schemas.ts';

type JsonSchema = Record<string, unknown>;

/**
 * The OpenAPI 3.1 description of the routes, generated from the zod schemas that validate
 * requests (never written by hand). Schemas registered with `.meta({id})` become components.
 */
export function buildOpenApi(routes: readonly Route[], version: string): JsonSchema {
  const components: Record<string, JsonSchema> = {};
  const toSchema = (schema: z.ZodType, io: 'input' | 'output'): JsonSchema => {
    const id = z.globalRegistry.get(schema)?.id;
    if (id) {
      // zod answers a registered schema with {$ref, $defs: {id: …}}: strip files the definition.
      if (!components[id]) {
        const own = strip(z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as JsonSchema, components);
        if (own.$ref !== `#/components/schemas/${id}`) components[id] = own;
      }
      return { $ref: `#/components/schemas/${id}` };
    }
    return strip(z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as JsonSchema, components);
  };

  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const parameters: unknown[] = [];
    for (const [where, schema] of [['path', route.params], ['query', route.query]] as const) {
      if (!schema) continue;
      const js = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, JsonSchema>; required?: string[] };
      for (const [name, prop] of Object.entries(js.properties ?? {})) {
        const { description, ...rest } = prop;
        parameters.push({ name, in: where, required: where === 'path' || (js.required ?? []).includes(name), description, schema: rest });
      }
    }
    for (const [name, description] of Object.entries(route.headers ?? {})) {
      parameters.push({ name, in: 'header', required: false, description, schema: { type: 'string' } });
    }
    const responses: Record<string, unknown> = {};
    for (const [status, schema] of Object.entries({ ...dispatcherErrors(route), ...route.responses })) {
      responses[status] =
        schema === 'binary'
          ? { description: 'file bytes', content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } }
          : schema === 'sse'
            ? { description: 'event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } }
            : schema === 'text'
              ? { description: 'text', content: { 'text/plain': { schema: { type: 'string' } } } }
              : {
                  description: Number(status) < 400 ? 'success' : errorDescription(route, status),
                  content: { 'application/json': { schema: toSchema(schema, 'output') } },
                };
    }
    const operation: Record<string, unknown> = {
      operationId: `${route.method.toLowerCase()}${route.path.replace(/[/:-](\w)/g, (_, c: string) => c.toUpperCase()).replace(/\W/g, '')}`,
      summary: route.summary,
      tags: [route.tag],
      parameters,
      responses,
    };
    // Public routes say so (`security: []`): a generator must not attach a token, nor guess.
    operation.security = route.scope ? [{ bearer: [route.scope] }] : [];
    if (route.body === 'binary') {
      operation.requestBody = { required: true, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } };
    } else if (route.body) {
      operation.requestBody = { required: true, content: { 'application/json': { schema: toSchema(route.body, 'input') } } };
    }
    const openApiPath = route.path.replace(/:(\w+)/g, '{$1}');
    paths[openApiPath] = { ...paths[openApiPath], [route.method.toLowerCase()]: operation };
  }

  return {
    openapi: '3.1.0',
    info: { title: 'Filestore API', version, description: 'Errors are {"error":{"code","message","details?"}}. Scopes nest: admin ⊃ write ⊃ read.' },
    // Relative: the API is served at the root of whichever server serves this document
    // (`npm start`, an agent, API Gateway's $default stage in front of the API Lambda).
    servers: [{ url: '/', description: 'the server that serves this document' }],
    paths,
    components: {
      schemas: components,
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'scopes filestore:read, filestore:write, filestore:admin' } },
    },
  };
}

/**
 * The errors the dispatcher (app.ts) answers before a route's handler runs, so every operation
 * can meet them whatever the route lists: 400 when an input fails its schema, 401/403 for a
 * route that needs a scope, and 403 ORIGIN_NOT_ALLOWED on every route of a server without
 * tokens (local-caller.ts). A route's own entry for the same status wins.
 */
function dispatcherErrors(route: Route): Record<number, z.ZodType> {
  const errors: Record<number, z.ZodType> = {};
  if (route.params || route.query || route.body) errors[400] = ErrorBody;
  if (route.scope) errors[401] = ErrorBody;
  errors[403] = ErrorBody;
  return errors;
}

function errorDescription(route: Route, status: string): string {
  const own = status in route.responses;
  const also = own ? '; or another code of this route' : '';
  if (status === '400' && (route.params || route.query || route.body)) return `VALIDATION_ERROR: a parameter or the body fails its schema${also}`;
  if (status === '401') return `UNAUTHENTICATED: no token, or one the server does not know${also}`;
  if (status === '403') {
    const forbidden = route.scope ? `FORBIDDEN: the token lacks ${route.scope}; ` : '';
    return `${forbidden}ORIGIN_NOT_ALLOWED: a server without tokens answers only programs on its machine and its own pages${also}`;
  }
  return 'error';
}

/** Drops `$schema`, and moves `$defs` into the components (references rewritten to match). */
function strip(schema: JsonSchema, components: Record<string, JsonSchema>): JsonSchema {
  const { $schema: _, $defs, ...rest } = schema as JsonSchema & { $defs?: Record<string, JsonSchema> };
  const rewrite = (s: unknown): JsonSchema => JSON.parse(JSON.stringify(s).replaceAll('"#/$defs/', '"#/components/schemas/')) as JsonSchema;
  for (const [id, def] of Object.entries($defs ?? {})) components[id] ??= rewrite(def);
  return rewrite(rest);
}
