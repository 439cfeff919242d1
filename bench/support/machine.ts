import os from 'node:os';
import type { Pool } from '../../shared/db/pool.ts';
import { run } from './big-write.ts';

/** Facts about the machine that the figures depend on, as `label: value` lines. */
export async function machineFacts(pool: Pool, tempDir: string, redisUrl: string): Promise<Array<[string, string]>> {
  const quiet = (p: Promise<string>) => p.then((s) => s.trim()).catch((e: Error) => `unknown (${e.message})`);
  const dfType = async (dir: string) => {
    const out = await quiet(run('df', ['-T', dir]));
    const cols = out.split('\n').pop()?.trim().split(/\s+/) ?? [];
    return cols.length >= 7 ? `${cols[1]} on ${cols[0]} (mounted at ${cols[6]})` : out;
  };
  const pg = await pool.query<{ version: string }>('SELECT version()');
  const dataDir = await pool
    .query<{ data_directory: string }>('SHOW data_directory')
    .then((r) => r.rows[0]?.data_directory ?? null)
    .catch(() => null);
  const settings = await pool.query<{ name: string; setting: string }>(
    "SELECT name, setting FROM pg_settings WHERE name IN ('synchronous_commit', 'fsync', 'wal_sync_method', 'autovacuum') ORDER BY name",
  );
  const cpus = os.cpus();
  return [
    ['nproc', `${await quiet(run('nproc', []))} (${cpus[0]?.model ?? 'unknown CPU'})`],
    ['load average (1, 5, 15 min) at start', os.loadavg().map((l) => l.toFixed(2)).join(', ')],
    ['memory', `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`],
    ['kernel', `${os.type()} ${os.release()}`],
    ['node', process.version],
    ['temp dir', tempDir],
    ['temp dir filesystem (df -T)', await dfType(tempDir)],
    ['postgres', (pg.rows[0]?.version ?? 'unknown').split(' on ')[0] as string],
    ['postgres data dir filesystem', dataDir ? `${await dfType(dataDir)} — ${dataDir}` : 'unknown (not superuser)'],
    ['postgres settings', settings.rows.map((r) => `${r.name}=${r.setting}`).join(', ')],
    ['events/cache', redisUrl === 'inline' ? 'inline (in-process)' : redisUrl],
    ['cp', (await quiet(run('cp', ['--version']))).split('\n')[0] as string],
  ];
}
