import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { loadConfig } from '../../shared/index-config.ts';
import { readyDatabase } from '../../shared/db/index.ts';
import { createMount, findMount, type Mount } from '../../shared/catalogue/index.ts';
import { startAgent, type RunningAgent } from '../../agent/agent.ts';
import { agentOptionsFrom } from '../../agent/main.ts';
import { stopOnSignals } from '../../shared/process/index.ts';
import type { EmbeddedDatabase } from '../embedded-postgres.ts';
import { portInUse } from '../errors.ts';

const EMBEDDED_DIR = '.filestore';

/** `filestore start` (npm start): everything in one process on embedded defaults. */
export function registerStart(program: Command): void {
  program
    .command('start')
    .description('run Filestore in one process on embedded defaults, tracking ./data as mount "local"')
    .action(async () => {
      // Watchers on by default (SPEC §8): changes made in ./data around Filestore are followed
      // as they happen; FILESTORE_ENABLE_WATCHERS=false turns them off.
      const config = loadConfig({ FILESTORE_ALLOW_INLINE: 'true', FILESTORE_ENABLE_WATCHERS: 'true', ...process.env });
      const log = (l: string) => console.error(l);
      agentOptionsFrom(config, '', log); // every setting checked (a CONFIG_ERROR) before a database starts
      let embedded: EmbeddedDatabase | null = null;
      let starting: Promise<RunningAgent> | undefined;
      // A signal while starting waits for the start to finish, then stops everything cleanly:
      // the agent drains, then the embedded PostgreSQL (in a session of its own, out of reach of
      // the terminal's Ctrl-C) is stopped, last. The launcher (npm, npx) going away stops it too.
      let embeddedStarting: Promise<EmbeddedDatabase | null> | undefined;
      const stop = async () => {
        await (await starting?.catch(() => undefined))?.stop().catch(() => {});
        await (await embeddedStarting?.catch(() => null))?.stop().catch(() => {});
      };
      stopOnSignals(stop, log, 'filestore', { followParent: true });
      try {
        // Neither DATABASE_URL nor FILESTORE_DB_*: an embedded PostgreSQL with its data in .filestore/, reused across runs.
        embeddedStarting = config.database ? Promise.resolve(null) : import('../embedded-postgres.ts').then((m) => m.startEmbeddedPostgres(EMBEDDED_DIR, log));
        embedded = await embeddedStarting;
        const database = config.database ?? { databaseUrl: (embedded as EmbeddedDatabase).url, iamAuth: null };
        const databaseUrl = database.databaseUrl;
        await readyDatabase(database);
        const root = path.resolve('data');
        await mkdir(root, { recursive: true });
        let mount: Mount | undefined;
        // The agent's pieces in one process: API, commands, reconciliation (inline or on
        // Redis), audits of every mount with a cron, watchers when enabled.
        starting = startAgent({
          ...agentOptionsFrom(config, databaseUrl, log),
          auditSelection: {},
          async prepare(core) {
            mount =
              (await findMount(core.pool, 'local')) ??
              (await createMount(core.pool, { key: 'local', kind: 'local', rootPath: root, agentId: config.FILESTORE_AGENT_ID }));
          },
        });
        const agent = await starting;
        const local = mount as Mount;
        if (local.rootPath !== root) {
          console.error(`note: mount "local" was registered earlier at ${local.rootPath}, not ${root}; it keeps that root`);
        }
        const server = agent.server;
        const where = embedded ? `embedded PostgreSQL (${path.resolve(EMBEDDED_DIR)})` : `PostgreSQL at ${new URL(databaseUrl).host}`;
        console.log(`filestore running at ${server.url}: mount "local" at ${local.rootPath}, catalogue in ${where}, events ${config.REDIS_URL === 'inline' ? 'in-process' : 'on Redis'}`);
        const tokens = agentOptionsFrom(config, databaseUrl, log).tokens.length;
        console.log(server.authDisabled ? 'authentication is off (loopback only); set FILESTORE_API_TOKENS to require tokens' : `authentication: ${tokens} token(s) configured`);
        if (config.FILESTORE_AUDIT_CRON) console.log(`audits: every mount on "${config.FILESTORE_AUDIT_CRON}"`);
        console.log(
          config.FILESTORE_ENABLE_WATCHERS
            ? `watching ${local.rootPath}: changes made there outside Filestore are caught as they happen (FILESTORE_ENABLE_WATCHERS=false turns this off)`
            : `not watching ${local.rootPath} (FILESTORE_ENABLE_WATCHERS=false): changes made there outside Filestore show after \`npx filestore reconcile local\``,
        );
        const cliUrl = server.url === 'http://127.0.0.1:4300' ? '' : `FILESTORE_URL=${server.url} `;
        console.log(`try, in another shell:  ${cliUrl}npx filestore put README.md local:docs/readme.md && ${cliUrl}npx filestore ls local:docs`);
        console.log('Ctrl-C stops');
      } catch (err) {
        const code = (err as { code?: unknown }).code;
        const why = code === 'EADDRINUSE' ? portInUse(err as { port?: unknown; address?: unknown }).message : `${(err as Error).message}${typeof code === 'string' ? ` (${code})` : ''}`;
        console.error(`filestore: could not start: ${why}`);
        await stop();
        process.exit(1);
      }
    });
}
