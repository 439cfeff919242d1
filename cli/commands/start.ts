import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../../shared/config.ts';
import { ensureDatabase } from '../../shared/db/ensure-database.ts';
import { createFilestore } from '../../shared/runtime.ts';
import { createMount, findMount } from '../../shared/catalogue/mounts.ts';
import { resolveAuth } from '../../shared/api/auth-config.ts';
import { serveApi, type ApiServer } from '../../shared/api/serve.ts';
import { startAuditScheduler, type AuditScheduler } from '../../shared/reconcile/audit-scheduler.ts';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../embedded-postgres.ts';

const EMBEDDED_DIR = '.filestore';

/** `filestore start` (npm start): everything in one process on embedded defaults. */
export function registerStart(program: Command): void {
  program
    .command('start')
    .description('run Filestore in one process on embedded defaults, tracking ./data as mount "local"')
    .action(async () => {
      const config = loadConfig({ FILESTORE_ALLOW_INLINE: 'true', ...process.env });
      const auth = resolveAuth({ mode: config.FILESTORE_AUTH, tokens: config.FILESTORE_API_TOKENS, host: config.FILESTORE_HOST });
      const log = (l: string) => console.error(l);
      // Unset DATABASE_URL: an embedded PostgreSQL with its data in .filestore/, reused across runs.
      const embedded = config.DATABASE_URL ? null : await startEmbeddedPostgres(EMBEDDED_DIR, log);
      const databaseUrl = config.DATABASE_URL ?? (embedded as EmbeddedDatabase).url;
      let fs: Awaited<ReturnType<typeof createFilestore>> | undefined;
      let server: ApiServer | undefined;
      let audits: AuditScheduler | undefined;
      let stopping = false;
      const stop = async (code: number) => {
        if (stopping) return;
        stopping = true;
        await server?.close().catch(() => {});
        await audits?.close().catch(() => {});
        await fs?.close().catch(() => {});
        await embedded?.stop().catch(() => {});
        process.exit(code);
      };
      process.once('SIGINT', () => void stop(0));
      process.once('SIGTERM', () => void stop(0));
      try {
        await ensureDatabase(databaseUrl);
        fs = await createFilestore({
          databaseUrl,
          redisUrl: config.REDIS_URL,
          poolSize: config.FILESTORE_DB_POOL_SIZE,
          s3: { endpoint: config.FILESTORE_S3_ENDPOINT },
          log,
          // One process runs everything: reconciliation jobs too, inline or on Redis.
          reconcile: {
            consume: true,
            concurrency: config.FILESTORE_RECONCILE_CONCURRENCY,
            maxMissingRatio: config.FILESTORE_MAX_MISSING_RATIO,
            s3MissingGraceMs: config.FILESTORE_S3_MISSING_GRACE_MS,
            agentId: config.FILESTORE_AGENT_ID,
          },
        });
        if (config.FILESTORE_AUDIT_CRON) {
          audits = await startAuditScheduler({ pool: fs.pool, queue: fs.reconcile, cron: config.FILESTORE_AUDIT_CRON, redisUrl: config.REDIS_URL, log });
          log(`audits: every mount on "${config.FILESTORE_AUDIT_CRON}"`);
        }
        const root = path.resolve('data');
        await mkdir(root, { recursive: true });
        const mount =
          (await findMount(fs.pool, 'local')) ??
          (await createMount(fs.pool, { key: 'local', kind: 'local', rootPath: root, agentId: config.FILESTORE_AGENT_ID }));
        if (mount.rootPath !== root) {
          console.error(`note: mount "local" was registered earlier at ${mount.rootPath}, not ${root}; it keeps that root`);
        }
        const where = embedded ? `embedded PostgreSQL (${path.resolve(EMBEDDED_DIR)})` : `PostgreSQL at ${new URL(databaseUrl).host}`;
        server = await serveApi({ fs, host: config.FILESTORE_HOST, port: config.PORT, tokens: auth.tokens, authDisabled: auth.disabled, log });
        console.log(`filestore running at ${server.url}: mount "local" at ${mount.rootPath}, catalogue in ${where}, events ${config.REDIS_URL === 'inline' ? 'in-process' : 'on Redis'}`);
        console.log(auth.disabled ? 'authentication is off (loopback only); set FILESTORE_API_TOKENS to require tokens' : `authentication: ${auth.tokens.length} token(s) configured`);
        const cliUrl = server.url === 'http://127.0.0.1:4300' ? '' : `FILESTORE_URL=${server.url} `;
        console.log(`try, in another shell:  ${cliUrl}npx filestore put README.md local:docs/readme.md && ${cliUrl}npx filestore ls local:docs`);
        console.log('Ctrl-C stops');
      } catch (err) {
        console.error(`filestore: could not start: ${(err as Error).message}`);
        await stop(1);
      }
    });
}
