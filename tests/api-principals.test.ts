import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { redactText } from '../shared/api/host-paths.ts';
import { createMount } from '../shared/catalogue/mounts.ts';
import { uniqueKey } from './support/filestore.ts';
import { eventually, expectError, openSse, qs, useApiServer, type SseEvent, type TokenName } from './support/http.ts';

// What one caller may learn from, or do to, another caller's requests: idempotency keys are
// scoped to the principal that sent them, and only admins see where mounts live on their hosts.

const api = useApiServer('write');
const { c, mountOf } = api;

interface Entry {
  id: number;
  principal: string | null;
  idempotencyKey: string | null;
  request: Record<string, unknown>;
}

const journal = async (mountId: string, token: TokenName) =>
  (await c.json<{ items: Entry[] }>('GET', `/v1/journal?${qs({ mountId })}`, 200, { token })).items;

describe('idempotency keys belong to the principal that sent them', () => {
  it('another principal sending the same key runs its own command instead of receiving the first one’s result', async () => {
    const t = await mountOf();
    const key = `shared-${randomUUID()}`;
    const route = `/v1/files?${qs({ mountId: t.mount.key, path: 'f.txt' })}`;
    const first = await c.json<{ journalEntryId: number; node: { version: number } }>('PUT', route, 200, { token: 'write', body: 'same', headers: { 'idempotency-key': key } });
    const other = await c.json<{ journalEntryId: number; node: { version: number } }>('PUT', route, 200, { token: 'admin', body: 'same', headers: { 'idempotency-key': key } });
    expect(other.journalEntryId).not.toBe(first.journalEntryId);
    expect(other.node.version).toBe(2);
    // A different request under the other principal's key is not a conflict either.
    await c.json('POST', '/v1/commands/mkdir', 200, { token: 'admin', json: { mountId: t.mount.key, path: 'd' }, headers: { 'idempotency-key': `${key}-2` } });
    await c.json('POST', '/v1/commands/mkdir', 200, { token: 'write', json: { mountId: t.mount.key, path: 'e' }, headers: { 'idempotency-key': `${key}-2` } });
    // Each principal's replay still returns its own first result.
    const replay = await c.json<{ journalEntryId: number }>('PUT', route, 200, { token: 'write', body: 'same', headers: { 'idempotency-key': key } });
    expect(replay.journalEntryId).toBe(first.journalEntryId);
    const replayOther = await c.json<{ journalEntryId: number }>('PUT', route, 200, { token: 'admin', body: 'same', headers: { 'idempotency-key': key } });
    expect(replayOther.journalEntryId).toBe(other.journalEntryId);
    expect((await journal(t.mount.key, 'admin')).map((e) => e.principal)).toEqual(['test-write', 'test-admin', 'test-admin', 'test-write']);
  });

  it('the journal shows an entry’s idempotency key only to the principal that sent it, and to admins', async () => {
    const t = await mountOf();
    const key = `secret-${randomUUID()}`;
    await c.json('POST', '/v1/commands/mkdir', 200, { token: 'write', json: { mountId: t.mount.key, path: 'k' }, headers: { 'idempotency-key': key } });
    const asReader = await journal(t.mount.key, 'read');
    expect(asReader).toHaveLength(1);
    expect(asReader[0]?.idempotencyKey).toBeNull();
    expect(JSON.stringify(asReader)).not.toContain(key);
    expect((await journal(t.mount.key, 'write'))[0]?.idempotencyKey).toBe(key);
    expect((await journal(t.mount.key, 'admin'))[0]?.idempotencyKey).toBe(key);
  });
});

describe('host paths are for admins', () => {
  it('read and write tokens see no mount rootPath, and no host path in healthReason or job errors; admin sees them', async () => {
    const t = await mountOf();
    const root = t.root as string;
    await rm(root, { recursive: true, force: true });
    const job = await c.json<{ id: number }>('POST', '/v1/reconcile', 202, { json: { mountId: t.mount.key } });
    await eventually(async () => {
      const j = await c.json<{ status: string }>('GET', `/v1/reconcile/jobs/${job.id}`, 200, { token: 'admin' });
      return j.status === 'failed' ? j : undefined;
    }, 'the reconciliation of a mount without its root to fail');

    for (const token of ['read', 'write'] as const) {
      const views = [
        await c.json<Record<string, unknown>>('GET', `/v1/mounts/${t.mount.key}`, 200, { token }),
        ...(await c.json<{ items: Array<Record<string, unknown>> }>('GET', '/v1/mounts', 200, { token })).items.filter((m) => m.key === t.mount.key),
      ];
      expect(views).toHaveLength(2);
      for (const m of views) {
        expect(m, token).toMatchObject({ kind: 'local', rootPath: null, health: 'unhealthy' });
        expect(m.healthReason, token).toEqual(expect.stringContaining('does not exist'));
        expect(JSON.stringify(m), token).not.toContain(root);
      }
      const one = await c.json<{ error: unknown }>('GET', `/v1/reconcile/jobs/${job.id}`, 200, { token });
      const listed = await c.json<{ items: Array<{ id: number }> }>('GET', `/v1/reconcile/jobs?${qs({ mountId: t.mount.key })}`, 200, { token });
      expect(JSON.stringify(one.error), token).toContain('does not exist');
      expect(JSON.stringify(one), token).not.toContain(root);
      expect(JSON.stringify(listed), token).not.toContain(root);
    }

    // A command on it fails; neither its answer nor its journal entry shows a non-admin the root.
    const res = await c.call('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'x.txt' })}`, { token: 'write', body: 'x' });
    const answer = await res.text();
    expect(res.status, answer).toBeGreaterThanOrEqual(400);
    expect(answer).not.toContain(root);
    const entries = await eventually(async () => {
      const all = await c.json<{ items: Array<{ status: string; error: unknown }> }>('GET', `/v1/journal?${qs({ mountId: t.mount.key })}`, 200, { token: 'read' });
      return all.items.length === 1 && all.items[0]?.status === 'failed' ? all.items : undefined;
    }, 'the failed command to be journaled as failed');
    expect(JSON.stringify(entries)).not.toContain(root);

    const asAdmin = await c.json<Record<string, unknown>>('GET', `/v1/mounts/${t.mount.key}`, 200, { token: 'admin' });
    expect(asAdmin.rootPath).toBe(root);
    expect(asAdmin.healthReason).toContain(root);
    expect(JSON.stringify(await c.json('GET', `/v1/reconcile/jobs/${job.id}`, 200, { token: 'admin' }))).toContain(root);
  });
});

describe('a mount root that is not reachable is a condition that passes', () => {
  it('a command answers 503 UNAVAILABLE with Retry-After (the root shown to admins only), and the same PUT with the same Idempotency-Key succeeds once the root is back', async () => {
    const fresh = await mountOf(); // its backend is first opened while the root is gone
    const used = await mountOf(); // its backend was opened before the root went
    await c.json('PUT', `/v1/files?${qs({ mountId: used.mount.key, path: 'before.txt' })}`, 200, { token: 'write', body: 'before' });
    for (const t of [fresh, used]) {
      const root = t.root as string;
      await rm(root, { recursive: true, force: true });
      const route = `/v1/files?${qs({ mountId: t.mount.key, path: 'x.txt' })}`;
      const key = `root-back-${randomUUID()}`;
      const res = await c.call('PUT', route, { token: 'write', body: 'x', headers: { 'idempotency-key': key } });
      const e = await expectError(res, 503, 'UNAVAILABLE');
      expect(res.headers.get('retry-after')).toMatch(/^\d+$/);
      expect(e.message).toMatch(/root.*not reachable now.*retry/);
      expect(JSON.stringify(e)).not.toContain(root);
      // The same answer again while it is gone (not a stored failure: the command runs again).
      await expectError(c.call('PUT', route, { token: 'write', body: 'x', headers: { 'idempotency-key': key } }), 503, 'UNAVAILABLE');
      const asAdmin = await expectError(c.call('PUT', route, { token: 'admin', body: 'x' }), 503, 'UNAVAILABLE');
      expect(asAdmin.message).toContain(root);

      await mkdir(root);
      const done = await c.json<{ node: { path: string; sizeBytes: number } }>('PUT', route, 200, { token: 'write', body: 'x', headers: { 'idempotency-key': key } });
      expect(done.node).toMatchObject({ path: 'x.txt', sizeBytes: 1 });
      expect(await readFile(path.join(root, 'x.txt'), 'utf8')).toBe('x');
      const entries = await journal(t.mount.key, 'admin');
      expect(entries.filter((j) => j.idempotencyKey === key).map((j) => (j as unknown as { status: string }).status)).toEqual(['succeeded']);
    }
  });
});

describe('host paths with spaces', () => {
  it('a mount root holding a space is hidden whole from non-admins (health, job errors, error answers, journal), and other host paths with spaces as far as they can be told', async () => {
    const parent = await mkdtemp(path.join(os.tmpdir(), 'filestore-spaced-'));
    api.cleanup(() => rm(parent, { recursive: true, force: true }));
    const root = path.join(parent, 'My Disk');
    await mkdir(root);
    const mount = await createMount(api.server.core.pool, { key: uniqueKey('spaced'), kind: 'local', rootPath: root });
    await rm(root, { recursive: true });
    const job = await c.json<{ id: number }>('POST', '/v1/reconcile', 202, { json: { mountId: mount.key } });
    await eventually(async () => {
      const j = await c.json<{ status: string }>('GET', `/v1/reconcile/jobs/${job.id}`, 200, { token: 'admin' });
      return j.status === 'failed' ? j : undefined;
    }, 'the reconciliation of a mount without its root to fail');
    const put = await c.call('PUT', `/v1/files?${qs({ mountId: mount.key, path: 'x.txt' })}`, { token: 'write', body: 'x' });
    const answer = await put.text();
    expect(put.status, answer).toBe(503);
    const seen = [
      answer,
      JSON.stringify(await c.json('GET', `/v1/mounts/${mount.key}`, 200, { token: 'read' })),
      JSON.stringify(await c.json('GET', `/v1/reconcile/jobs/${job.id}`, 200, { token: 'read' })),
      JSON.stringify(await c.json('GET', `/v1/journal?${qs({ mountId: mount.key })}`, 200, { token: 'read' })),
    ];
    for (const text of seen) {
      expect(text).not.toContain(parent);
      expect(text).not.toContain('Disk');
      expect(text).toContain('<mount root>');
    }
    // Admins see it as it is.
    expect(JSON.stringify(await c.json('GET', `/v1/mounts/${mount.key}`, 200, { token: 'admin' }))).toContain(root);

    // Text naming host paths that are no known root: redacted as far as a path can be told apart from words.
    expect(redactText('cannot read /mnt/Other Disk/sub dir/f.txt: EACCES', [])).toBe('cannot read <host path>: EACCES');
    expect(redactText(`${root}/a b/c.txt and ${root}2/d`, [root])).toBe('<mount root>/a b/c.txt and <host path>');
    expect(redactText('see GET /v1/journal', [])).toBe('see GET <host path>'); // why messages are redacted by their roots only
  });
});

describe('the event stream and symlink targets show host paths to admins only', () => {
  it('a read token’s stream carries no host path: a failed command’s error (root gone) and symlink targets naming the host are redacted, as in /v1/nodes, snapshots, command results and the journal; an admin’s stream has them', async () => {
    const t = await mountOf();
    const root = t.root as string;
    await mkdir(path.join(root, 'docs'));
    await writeFile(path.join(root, 'docs', 'a.txt'), 'a');
    await symlink(path.join(root, 'docs', 'a.txt'), path.join(root, 'inside-abs')); // absolute, inside the root
    await symlink('/etc/hostname', path.join(root, 'outside-abs')); // absolute, elsewhere on the host
    await symlink('../../../etc/passwd', path.join(root, 'climbs')); // relative, above the root
    await symlink('docs/a.txt', path.join(root, 'relative')); // relative, inside: the tree's own content
    const expected: Record<string, string> = {
      'inside-abs': '<mount root>/docs/a.txt',
      'outside-abs': '<host path>',
      climbs: '<host path>',
      relative: 'docs/a.txt',
    };
    const gone = await mountOf(); // a second mount, whose root goes before its backend is first opened
    const goneRoot = gone.root as string;
    const stream = '/v1/events/stream';
    const reader = await openSse(c, stream, { token: 'read' });
    const admin = await openSse(c, stream, { token: 'admin' });
    api.cleanup(async () => {
      reader.abort();
      admin.abort();
    });
    const leaks = (text: string) => [root, goneRoot, '/etc/', '../../../'].filter((s) => text.includes(s));
    const targetOf = (n: unknown) => (n as { metadata: { symlinkTarget?: string } }).metadata.symlinkTarget;

    await c.json('POST', '/v1/reconcile', 202, { json: { mountId: t.mount.key } });
    const reconciled = (events: SseEvent[]) =>
      events.filter((e) => e.event === 'filestore.node.reconciled' && e.data.mountId === t.mount.id && (e.data.data.node as { kind: string }).kind === 'symlink');
    await reader.until((events) => reconciled(events).length === 4);
    for (const e of reconciled(reader.events)) {
      const node = e.data.data.node as { path: string };
      expect(targetOf(node), node.path).toBe(expected[node.path]);
    }
    await admin.until((events) => reconciled(events).length === 4);
    expect(Object.fromEntries(reconciled(admin.events).map((e) => [(e.data.data.node as { path: string }).path, targetOf(e.data.data.node)]))).toMatchObject({
      'inside-abs': path.join(root, 'docs', 'a.txt'),
      'outside-abs': '/etc/hostname',
    });

    // The catalogue's own answers to non-admins say the same.
    const listed = await c.json<{ items: Array<{ id: number; path: string; kind: string }> }>('GET', `/v1/nodes?${qs({ mountId: t.mount.key, kind: 'symlink' })}`, 200, { token: 'read' });
    expect(Object.fromEntries(listed.items.map((n) => [n.path, targetOf(n)]))).toEqual(expected);
    const one = await c.json('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'outside-abs' })}`, 200, { token: 'read' });
    expect(targetOf(one)).toBe('<host path>');
    const inside = listed.items.find((n) => n.path === 'inside-abs');
    const history = await c.json<{ items: Array<{ state: unknown }> }>('GET', `/v1/nodes/${inside?.id}/snapshots`, 200, { token: 'read' });
    expect(targetOf(history.items[0]?.state)).toBe('<mount root>/docs/a.txt');
    const moved = await c.json<{ node: unknown }>('POST', '/v1/commands/move', 200, { token: 'write', json: { mountId: t.mount.key, path: 'inside-abs', targetPath: 'moved-abs' } });
    expect(targetOf(moved.node)).toBe('<mount root>/docs/a.txt');
    expect(leaks(JSON.stringify(await c.json('GET', `/v1/journal?${qs({ mountId: t.mount.key })}`, 200, { token: 'read' })))).toEqual([]);
    expect(JSON.stringify(await c.json('GET', `/v1/journal?${qs({ mountId: t.mount.key })}`, 200, { token: 'admin' }))).toContain(root);
    await reader.until((events) => events.some((e) => e.event === 'filestore.node.moved' && e.data.mountId === t.mount.id));

    // The root gone, a write token's PUT fails: its filestore.command.completed carries the error.
    await rm(goneRoot, { recursive: true, force: true });
    const res = await c.call('PUT', `/v1/files?${qs({ mountId: gone.mount.key, path: 'x.txt' })}`, { token: 'write', body: 'x' });
    expect(res.status, await res.text()).toBe(503);
    const failed = (events: SseEvent[]) =>
      events.find((e) => e.event === 'filestore.command.completed' && e.data.mountId === gone.mount.id && e.data.data.status === 'failed');
    await reader.until((events) => failed(events) !== undefined);
    expect(failed(reader.events)?.data.data.error).toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('<mount root>') });
    expect(leaks(JSON.stringify(reader.events))).toEqual([]);
    await admin.until((events) => failed(events) !== undefined);
    expect(JSON.stringify(failed(admin.events)?.data.data.error)).toContain(goneRoot);
  });
});
