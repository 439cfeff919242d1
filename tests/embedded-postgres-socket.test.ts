/**
 * The embedded PostgreSQL (`npm start` without DATABASE_URL) is reached by the product through
 * a Unix socket in its data directory — a round trip costs about half of one over loopback TCP
 * — while its TCP address stays for other tools; where the socket's path would be too long for
 * the OS (107 bytes), the product connects over TCP as before.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { handToPostgresUser, startEmbeddedPostgres, type EmbeddedDatabase } from '../cli/embedded-postgres.ts';

/** How the connection `url` reaches the server: 'socket' (no client address) or 'tcp'. */
async function transportOf(url: string): Promise<'socket' | 'tcp'> {
  const client = new pg.Client({ connectionString: url.replace(/\/filestore(\?|$)/, '/postgres$1') });
  await client.connect();
  try {
    const { rows } = await client.query<{ addr: string | null }>('SELECT client_addr::text AS addr FROM pg_stat_activity WHERE pid = pg_backend_pid()');
    return rows[0]?.addr === null ? 'socket' : 'tcp';
  } finally {
    await client.end();
  }
}

describe('the embedded PostgreSQL', () => {
  const started: Array<{ db: EmbeddedDatabase; dir: string }> = [];
  afterAll(async () => {
    for (const { db, dir } of started) {
      await db.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  async function start(parent: string): Promise<EmbeddedDatabase> {
    const dir = await mkdtemp(path.join(parent, 'fs-pg-'));
    await handToPostgresUser(dir);
    const db = await startEmbeddedPostgres(dir, () => {});
    started.push({ db, dir });
    return db;
  }

  it('is reached through a Unix socket in its data directory; its TCP address still answers', async () => {
    const db = await start(os.tmpdir());
    expect(await transportOf(db.url)).toBe('socket');
    const url = new URL(db.url);
    expect(url.searchParams.get('host')).toBe(path.resolve(db.dataDir));
    url.search = '';
    expect(await transportOf(url.toString())).toBe('tcp');
  }, 120_000);

  it('where the socket path would be too long, is reached over TCP', async () => {
    const deep = await mkdtemp(path.join(os.tmpdir(), `fs-pg-deep-${'d'.repeat(70)}-`));
    await handToPostgresUser(deep);
    try {
      const db = await start(deep);
      expect(new URL(db.url).searchParams.has('host')).toBe(false);
      expect(await transportOf(db.url)).toBe('tcp');
    } finally {
      // the server is stopped in afterAll; its parent goes after it
      started.at(-1)!.dir = deep;
    }
  }, 120_000);
});
