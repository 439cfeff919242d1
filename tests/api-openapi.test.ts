import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { ROUTES } from '../shared/api/routes/index.ts';
import { JournalEntry, Node, Snapshot, page } from '../shared/api/schemas.ts';
import { qs, useApiServer } from './support/http.ts';

// GET /openapi.json: generated from the zod schemas that validate requests; real responses
// must validate against it (ajv, JSON Schema 2020-12 as OpenAPI 3.1 uses) and the zod schemas.

const { c, mountOf } = useApiServer('write');

const putFile = (mountId: string, p: string, bytes: string) =>
  c.json<{ journalEntryId: number; node: { id: number; version: number } }>('PUT', `/v1/files?${qs({ mountId, path: p })}`, 200, { body: bytes });

describe('API description', () => {
  it('/openapi.json is OpenAPI 3.1 listing every route with its method and the shared schemas', async () => {
    const doc = await c.json<{
      openapi: string;
      paths: Record<string, Record<string, { security?: unknown; responses: Record<string, unknown> }>>;
      components: { schemas: Record<string, unknown> };
    }>('GET', '/openapi.json', 200, { token: 'none' });
    expect(doc.openapi).toBe('3.1.0');
    const expected: Array<[string, string]> = [
      ['get', '/healthz'], ['get', '/readyz'], ['get', '/metrics'], ['get', '/openapi.json'],
      ['get', '/v1/mounts'], ['post', '/v1/mounts'], ['get', '/v1/mounts/{id}'], ['patch', '/v1/mounts/{id}'],
      ['get', '/v1/nodes'], ['get', '/v1/nodes/by-path'], ['get', '/v1/nodes/{id}'], ['get', '/v1/nodes/{id}/children'],
      ['get', '/v1/nodes/{id}/snapshots'], ['patch', '/v1/nodes/{id}/metadata'], ['put', '/v1/files'], ['get', '/v1/files'],
      ['post', '/v1/commands/mkdir'], ['post', '/v1/commands/move'], ['post', '/v1/commands/copy'], ['post', '/v1/commands/delete'],
      ['post', '/v1/reconcile'], ['get', '/v1/reconcile/jobs'], ['get', '/v1/reconcile/jobs/{id}'], ['get', '/v1/journal'],
      ['get', '/v1/events/stream'], ['delete', '/v1/mounts/{id}'], ['post', '/v1/journal/{id}/resolve'],
    ];
    for (const [method, p] of expected) expect(doc.paths[p]?.[method], `${method} ${p}`).toBeDefined();
    const described = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`));
    expect(described.sort()).toEqual(ROUTES.map((r) => `${r.method.toLowerCase()} ${r.path.replace(/:(\w+)/g, '{$1}')}`).sort());
    for (const name of ['Node', 'Mount', 'Error', 'Snapshot', 'JournalEntry', 'CommandResult', 'Rollup']) expect(doc.components.schemas[name], name).toBeDefined();
    expect(doc.paths['/v1/mounts']?.post?.security).toEqual([{ bearer: ['filestore:admin'] }]);
    // Public operations say so (redocly's security-defined): no token is attached, none guessed.
    for (const p of ['/healthz', '/readyz', '/metrics', '/openapi.json']) expect(doc.paths[p]?.get?.security, p).toEqual([]);
    // Every operation lists the errors it can meet before its handler runs (a 4XX at least).
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [m, op] of Object.entries(ops)) expect(Object.keys(op.responses).some((s) => /^4\d\d$/.test(s)), `${m} ${p}`).toBe(true);
    }
    expect(Object.keys(doc.paths['/v1/mounts']?.get?.responses ?? {}).sort()).toEqual(['200', '401', '403']);
    expect((doc as unknown as { servers: unknown }).servers).toEqual([{ url: '/', description: 'the server that serves this document' }]);
  });

  it('every component schema is a schema, never a bare reference to itself', async () => {
    const doc = await c.json<{ components: { schemas: Record<string, unknown> } }>('GET', '/openapi.json', 200, { token: 'none' });
    const selfRefs = Object.entries(doc.components.schemas)
      .filter(([name, s]) => JSON.stringify(s) === JSON.stringify({ $ref: `#/components/schemas/${name}` }))
      .map(([name]) => name);
    expect(selfRefs).toEqual([]);
    // Once they are real schemas, error bodies and command results validate against them too.
    const t = await mountOf();
    const validate = await validatorOf(doc);
    validate('CommandResult', await putFile(t.mount.key, 'r.txt', 'r'));
    validate('Error', await (await c.call('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'nope' })}`, { token: 'read' })).json());
  });

  it('real responses validate against the generated JSON schemas', async () => {
    const validate = await validatorOf(await c.json('GET', '/openapi.json', 200, { token: 'none' }));
    const t = await mountOf();
    const written = await putFile(t.mount.key, 'v/one.txt', 'one');
    await putFile(t.mount.key, 'v/one.txt', 'two!');
    validate('Node', written.node);
    validate('Node', await c.json('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'v' })}`, 200, { token: 'read' }));
    validate('Node', await c.json('GET', `/v1/nodes/${written.node.id}`, 200, { token: 'read' }));
    validate('Mount', await c.json('GET', `/v1/mounts/${t.mount.key}`, 200, { token: 'read' }));
    const journal = await c.json<{ items: unknown[] }>('GET', `/v1/journal?${qs({ mountId: t.mount.key })}`, 200, { token: 'read' });
    expect(journal.items.length).toBe(2);
    for (const e of journal.items) validate('JournalEntry', e);
    const snaps = await c.json<{ items: unknown[] }>('GET', `/v1/nodes/${written.node.id}/snapshots`, 200, { token: 'read' });
    expect(snaps.items.length).toBe(2);
    for (const s of snaps.items) validate('Snapshot', s);
    const list = await c.json<{ items: unknown[] }>('GET', `/v1/nodes?${qs({ mountId: t.mount.key })}`, 200, { token: 'read' });
    for (const n of list.items) validate('Node', n);

    // The same responses satisfy the zod schemas that generated the description.
    expect(() => Node.parse(written.node)).not.toThrow();
    expect(() => page(Node).parse(list)).not.toThrow();
    expect(() => page(Snapshot).parse(snaps)).not.toThrow();
    expect(() => page(JournalEntry).parse(journal)).not.toThrow();
  });
});

/** A JSON Schema (2020-12) validator over the description's components. */
async function validatorOf(doc: unknown): Promise<(name: string, value: unknown) => void> {
  const schemas = (doc as { components: { schemas: unknown } }).components.schemas;
  // The components as one JSON Schema document: `#/components/schemas/X` → `#/$defs/X`.
  const defs = JSON.parse(JSON.stringify(schemas).replaceAll('"#/components/schemas/', '"#/$defs/')) as Record<string, unknown>;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  const validators = new Map<string, ReturnType<typeof ajv.compile>>();
  return (name, value) => {
    expect(defs[name], name).toBeDefined();
    let v = validators.get(name);
    if (!v) validators.set(name, (v = ajv.compile({ $defs: defs, $ref: `#/$defs/${name}` })));
    const ok = v(value);
    expect(ok, `${name}: ${JSON.stringify(v.errors)}`).toBe(true);
  };
}
