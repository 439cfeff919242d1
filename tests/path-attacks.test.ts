import { Readable } from 'node:stream';
import { mkdir, mkdtemp, readdir, symlink, writeFile as fsWriteFile, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Filestore } from '../shared/runtime.ts';
import { createTestMount, startFilestore, type TestMount } from './support/filestore.ts';
import { expectCode, journalOf, livePaths } from './support/assertions.ts';

const body = () => Readable.from([Buffer.from('payload')]);

let core: Filestore;
beforeAll(async () => {
  core = await startFilestore();
});
afterAll(async () => {
  await core.close();
});

describe('path attacks on a local mount', () => {
  let t: TestMount;
  let outside: string;
  beforeEach(async () => {
    t = await createTestMount(core, 'local');
    outside = await mkdtemp(path.join(os.tmpdir(), 'filestore-outside-'));
    await fsWriteFile(path.join(outside, 'passwd'), 'root:x:0:0');
    return () => t.cleanup();
  });

  const attempts: Array<[string, string]> = [
    ['a ".." segment', '../escape.txt'],
    ['a nested ".." segment', 'a/../../escape.txt'],
    ['a "." segment', 'a/./b'],
    ['a percent-encoded ".." after URL decoding', decodeURIComponent('a/%2e%2e/%2e%2e/escape.txt')],
    ['a NUL byte', 'a\u0000b'],
    ['a control character', 'a\u0007b'],
    ['a backslash', '..\\escape.txt'],
    ['empty segments', 'a//b'],
    ['an overlong segment', `${'x'.repeat(256)}.txt`],
    ['an overlong path', `${'abcdefgh/'.repeat(460)}f`],
    ['the staging area', '.filestore-staging/x'],
  ];

  it.each(attempts)('%s is INVALID_PATH and writes nothing', async (_label, attack) => {
    await expectCode(core.orchestrator.writeFile(t.mount.key, { path: attack }, body()), 'INVALID_PATH');
    await expectCode(core.orchestrator.mkdir(t.mount.key, { path: attack, parents: true }), 'INVALID_PATH');
    await expectCode(core.orchestrator.move(t.mount.key, { path: 'x', targetPath: attack }), 'INVALID_PATH');
    expect(await readdir(t.root as string)).toEqual([]);
    expect(await livePaths(core, t.mount.id)).toEqual(['']);
  });

  it('a literal "%2e%2e" name is just a name, kept inside the root', async () => {
    await core.orchestrator.writeFile(t.mount.key, { path: '%2e%2e/file' }, body());
    expect(await readFile(path.join(t.root as string, '%2e%2e', 'file'), 'utf8')).toBe('payload');
  });

  it('a symlink to a directory outside the mount is never written through', async () => {
    await symlink(outside, path.join(t.root as string, 'etc'));
    await expectCode(core.orchestrator.writeFile(t.mount.key, { path: 'etc/passwd' }, body()), 'SYMLINK_IN_PATH');
    await expectCode(core.orchestrator.mkdir(t.mount.key, { path: 'etc/sub', parents: true }), 'SYMLINK_IN_PATH');
    expect(await readFile(path.join(outside, 'passwd'), 'utf8')).toBe('root:x:0:0');
    expect(await readdir(outside)).toEqual(['passwd']);
  });

  it('a symlink to the real /etc inside the mount is never written through', async () => {
    const probe = `filestore-probe-${process.pid}-${Date.now()}`;
    await symlink('/etc', path.join(t.root as string, 'etc'));
    await expectCode(core.orchestrator.writeFile(t.mount.key, { path: `etc/${probe}` }, body()), 'SYMLINK_IN_PATH');
    await expectCode(core.orchestrator.mkdir(t.mount.key, { path: `etc/${probe}`, parents: true }), 'SYMLINK_IN_PATH');
    await expectCode(core.orchestrator.copy(t.mount.key, { path: 'etc', targetPath: 'copy-of-etc' }), 'NOT_FOUND'); // an uncatalogued symlink
    expect(await readdir('/etc')).not.toContain(probe);
    // Refused at storage, journaled as failed (never left pending to block the path).
    expect((await journalOf(core, t.mount.id)).map((j) => [j.command, j.status, j.error?.code])).toEqual([
      ['writeFile', 'failed', 'SYMLINK_IN_PATH'],
      ['mkdir', 'failed', 'SYMLINK_IN_PATH'],
      ['copy', 'failed', 'NOT_FOUND'],
    ]);
  });

  it('a symlinked parent directory inside the mount is refused too', async () => {
    await mkdir(path.join(t.root as string, 'real'));
    await symlink(path.join(t.root as string, 'real'), path.join(t.root as string, 'alias'));
    await expectCode(core.orchestrator.writeFile(t.mount.key, { path: 'alias/f.txt' }, body()), 'SYMLINK_IN_PATH');
    expect(await readdir(path.join(t.root as string, 'real'))).toEqual([]);
  });

  it('a symlink file pointing outside is not overwritten through', async () => {
    await symlink(path.join(outside, 'passwd'), path.join(t.root as string, 'link'));
    const err = await core.orchestrator.writeFile(t.mount.key, { path: 'link' }, body()).catch((e) => e);
    expect(['SYMLINK_IN_PATH', 'PATH_ESCAPES_MOUNT']).toContain(err.code);
    expect(await readFile(path.join(outside, 'passwd'), 'utf8')).toBe('root:x:0:0');
  });
});
