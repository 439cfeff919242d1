import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleOptions } from '../cli/build-options.ts';

/**
 * A Lambda bundle loads the core in a directory that holds the bundle and nothing else: no
 * package.json above it, no migrations, no node_modules. So importing any module of shared/
 * must do nothing by itself (STYLE.md): no file read, no timer, no connection, no process
 * listener, no reading of Filestore's configuration. The probe bundles every module of
 * shared/ with the Lambda options of the build (cli/build-options.ts), copies the bundle alone
 * into an empty directory, and imports it in a fresh node process that records what the
 * import did.
 */
const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const VERSION = (JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** Every module of the core; the walker's main is a program (the walker process runs it), not a module to import. */
async function coreModules(): Promise<string[]> {
  const files = await readdir(path.join(ROOT, 'shared'), { recursive: true });
  return files
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts') && f !== path.join('backends', 'local', 'walker-main.ts'))
    .map((f) => path.join(ROOT, 'shared', f))
    .sort();
}

// Runs in the fresh process: watches fs, timers, sockets, process listeners and the environment,
// imports the bundle, reports. It must then exit by itself (nothing left running).
const PROBE = String.raw`
import fs from 'node:fs';
import net from 'node:net';
import timers from 'node:timers';
import { syncBuiltinESMExports } from 'node:module';
const did = { fs: [], timers: [], sockets: [], env: new Set(), listeners: [] };
const watch = (target, label, into) => {
  for (const key of Object.keys(target)) {
    const f = target[key];
    if (typeof f !== 'function' || /^[A-Z]/.test(key)) continue;
    target[key] = function (...args) { into.push(label + key + '(' + String(args[0]).slice(0, 120) + ')'); return f.apply(this, args); };
  }
};
watch(fs, 'fs.', did.fs);
watch(fs.promises, 'fs.promises.', did.fs);
for (const key of ['setTimeout', 'setInterval', 'setImmediate']) {
  const f = globalThis[key];
  globalThis[key] = timers[key] = function (...args) { did.timers.push(key); return f.apply(this, args); };
}
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) { did.sockets.push(JSON.stringify(args[0])); return connect.apply(this, args); };
syncBuiltinESMExports();
const env = process.env;
process.env = new Proxy(env, {
  get: (t, k) => { if (typeof k === 'string') did.env.add(k); return Reflect.get(t, k); },
  has: (t, k) => { if (typeof k === 'string') did.env.add(k); return Reflect.has(t, k); },
});
const events = ['exit', 'beforeExit', 'uncaughtException', 'unhandledRejection', 'warning', 'SIGINT', 'SIGTERM', 'SIGHUP', 'message', 'disconnect'];
const before = events.map((e) => process.listenerCount(e));
const core = await import(process.argv[1]);
process.env = env;
events.forEach((e, i) => { if (process.listenerCount(e) !== before[i]) did.listeners.push(e); });
console.log(JSON.stringify({ ...did, env: [...did.env], version: core.packageVersion(), modules: Object.keys(core).length }));
`;

describe('the core bundled for Lambda', () => {
  let work: string;
  let bundleFile: string;
  let modules: string[];

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'filestore-bundle-'));
    modules = await coreModules();
    const entry = path.join(work, 'core.ts');
    await writeFile(entry, [...modules.map((m, i) => `export * as m${i} from ${JSON.stringify(m)};`), `export { packageVersion } from ${JSON.stringify(path.join(ROOT, 'shared/package.ts'))};`].join('\n'));
    const out = path.join(work, 'out');
    await build(bundleOptions('lambda', { core: entry }, out));
    // The bundle alone, in a directory of its own (no package.json anywhere above /tmp/…).
    await mkdir(path.join(work, 'task'));
    bundleFile = path.join(work, 'task', 'core.mjs');
    await copyFile(path.join(out, 'core.mjs'), bundleFile);
    await mkdir(path.join(work, 'cwd'));
  }, 120_000);
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('loads from an empty directory, and importing every shared/ module reads no file, starts no timer, connects nowhere, adds no process listener and reads no Filestore setting', async () => {
    expect(modules.length).toBeGreaterThan(100);
    expect(await readdir(path.join(work, 'task'))).toEqual(['core.mjs']);
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none', REDIS_URL: 'redis://127.0.0.1:1' };
    const { stdout, stderr } = await run(process.execPath, ['--input-type=module', '-e', PROBE, bundleFile], { cwd: path.join(work, 'cwd'), env, timeout: 60_000 });
    expect(stderr).toBe('');
    const did = JSON.parse(stdout) as { fs: string[]; timers: string[]; sockets: string[]; env: string[]; listeners: string[]; version: string; modules: number };
    expect(did.modules).toBe(modules.length + 1);
    expect(did.version).toBe(VERSION);
    // (Node's module loader reads the bundle itself through fs.promises.)
    expect(did.fs.filter((call) => !call.includes(bundleFile))).toEqual([]);
    expect(did.timers).toEqual([]);
    expect(did.sockets).toEqual([]);
    expect(did.listeners).toEqual([]);
    // Packages may look at their own variables (pg reads USER); Filestore's are read when its
    // configuration is loaded (shared/config.ts loadConfig), never at import.
    expect(did.env.filter((k) => /^(FILESTORE_|DATABASE_URL$|REDIS_URL$|PORT$|PGAPPNAME$)/.test(k))).toEqual([]);
  }, 90_000);
});
