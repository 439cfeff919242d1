import { FilestoreError } from '../shared/index.ts';
import {
  FilestoreApiError,
  FilestoreClientError,
  FilestoreCommandPendingError,
  FilestoreUnreachableError,
  type FilestoreClient,
} from '../shared/client/index.ts';
import { isUnreachable } from '../shared/client/index-cli.ts';

/**
 * How the CLI reports an error, in the user's words: the server's messages speak to API callers
 * (fields such as `parents`, routes such as `PATCH /v1/mounts/KEY`); here they name the flag or
 * the command that does the same. Matched by error code and the server's phrase, so a message
 * the CLI does not know passes through unchanged. Under `--json` the same error is printed as one
 * JSON document on stderr: `{"error":{"code","message","details?"}}`; the exit code is the same.
 */
export interface CliError {
  code: string;
  message: string;
  details?: Record<string, unknown>;
  /** Extra lines for a person (not part of the JSON document). */
  hint?: string;
  /** Said to a person without "(CODE)": the message stands alone (no server, a local problem). */
  plain?: boolean;
}

type Rewrite = [code: string | null, from: RegExp, to: string | ((...m: string[]) => string)];

/** Request fields → the CLI's flags and arguments that set them. */
const FIELD_FLAGS: Record<string, string> = {
  key: 'KEY',
  rootPath: '--root',
  bucket: '--bucket',
  prefix: '--prefix',
  region: '--region',
  endpoint: '--endpoint',
  agentId: '--agent',
  accessMode: '--access',
  mountId: 'MOUNT',
  path: 'PATH',
  targetPath: 'the destination PATH',
  expectedVersion: '--if-match',
  status: '--status',
  limit: '--limit',
};

/** The server's API words → the CLI's flags and commands. */
const REWRITES: Rewrite[] = [
  ['NOT_FOUND', /; pass parents to create it$/, '; add -p (--parents) to create it'],
  ['DIRECTORY_NOT_EMPTY', /; pass recursive to delete it with its contents$/, '; add -r (--recursive) to delete it with its contents'],
  ['ALREADY_EXISTS', /; pass overwrite to replace it$/, '; add --overwrite to replace it'],
  ['MOUNT_PAUSED', /resume it with PATCH \/v1\/mounts\/(\S+) \{"state":"active"\}/, (_m, key) => `resume it with \`filestore mounts resume ${key}\``],
  [null, /^rootPath(:? )/, (_m, sep) => `--root${sep}`],
  [null, / \(or pass --no-check, API: "check": false, (if [^)]*)\)/, (_m, when) => ` (or add --no-check ${when})`],
  [null, /; pass --no-check \(API: "check": false\) to/, '; add --no-check to'],
  [null, /\(CLI --no-check, API "check": false\)/, '(--no-check)'],
  [
    'AGENT_UNAVAILABLE',
    /assign it to the agent on its host \(PATCH \/v1\/mounts\/(\S+) with \{"agentId": …\}\)/,
    (_m, key) => `assign it to the agent on its host: \`filestore mounts set ${key} --agent AGENT_ID\``,
  ],
  // Request validation names the body's and query's fields: the flags that set them.
  ['VALIDATION_ERROR', /\b(?:body|query)\.(\w+)(?=:)/g, (_m, field) => FIELD_FLAGS[field] ?? field],
  ['FORBIDDEN', /; pass mountId for one mount$/, '; add --mount KEY for one mount'],
  ['VALIDATION_ERROR', /^mountId is required \(or status=pending,/, 'name a mount with --mount KEY (or add --pending,'],
  ['INTERRUPTED', /; send (?:it|the command) again with the same Idempotency-Key(?: for its result)?$/, '; look (`filestore stat`) whether it took effect before running it again'],
  // (`events tail` adds what to do, as a hint)
  ['RESUME_POINT_EXPIRED', /\. Open the stream without Last-Event-ID .*$/, ''],
  ['CONFIG_ERROR', /look for it in GET \/v1\/journal, or send it again with the same Idempotency-Key$/, 'look for it with `filestore journal --mount MOUNT` before running it again'],
  ['NOT_IMPLEMENTED', /subscribe to GET \/v1\/events\/stream on an agent$/, 'run `filestore events tail` with FILESTORE_URL set to an agent'],
  ['PAYLOAD_TOO_LARGE', /: send it to the owning agent's API$/, ': set FILESTORE_URL to the owning agent (its FILESTORE_AGENT_URL) and put it again'],
  ['PAYLOAD_TOO_LARGE', /: ask for a part with Range \(bytes=0-…\) or download it from the owning agent$/, ': set FILESTORE_URL to the owning agent (its FILESTORE_AGENT_URL) and get it again'],
  ['REQUEST_TIMEOUT', /; send the request again \(with the same Idempotency-Key\)$/, '; run the command again'],
  ['STORAGE_ERROR', /— check the mount, or raise FILESTORE_MAX_MISSING_RATIO$/, '— check the mount, then run `filestore reconcile MOUNT --force` if those files are really gone (or raise FILESTORE_MAX_MISSING_RATIO)'],
];

/** The server's message in the CLI's words. */
export function inCliWords(code: string, message: string): string {
  let out = message;
  for (const [c, from, to] of REWRITES) {
    if (c !== null && c !== code) continue;
    out = typeof to === 'string' ? out.replace(from, to) : out.replace(from, (...m: unknown[]) => to(...(m.slice(0, -2) as string[])));
  }
  return out;
}

/** Commands whose arguments are MOUNT:PATH targets. */
const TARGET_COMMANDS = new Set(['ls', 'stat', 'put', 'get', 'mkdir', 'mv', 'cp', 'rm', 'reconcile']);

/** `ls docs` with no mount "docs": the argument was meant as MOUNT:PATH. Names the form and the mounts there are. */
async function bareTargetHint(err: FilestoreApiError, args: string[], client: () => FilestoreClient): Promise<string | undefined> {
  const key = /^no mount "([^"]+)"/.exec(err.message)?.[1];
  const command = args.find((a) => !a.startsWith('-'));
  // The key as an argument of its own (not the value of --mount), of a command that takes targets.
  const bare = args.some((a, i) => a === key && i > 0 && !args[i - 1]?.startsWith('--mount'));
  if (key === undefined || command === undefined || !TARGET_COMMANDS.has(command) || !bare) return undefined;
  const keys = await Promise.resolve()
    .then(() => client().listMounts())
    .then((r) => r.items.map((m) => m.key))
    .catch(() => [] as string[]);
  const example = keys.length > 0 ? `${keys[0]}:${key}` : `MOUNT:${key}`;
  const known = keys.length > 0 ? ` (mounts: ${keys.join(', ')})` : '';
  return `"${key}" was read as a mount: a target is MOUNT:PATH, e.g. ${example}${known}`;
}

/** What to tell the user about `err`, given the command line (`args`: argv without node and the script). */
export async function describeError(err: unknown, args: string[], client: () => FilestoreClient): Promise<CliError> {
  if (err instanceof FilestoreApiError) {
    const out: CliError = { code: err.code, message: inCliWords(err.code, err.message) };
    if (err.details) out.details = err.details;
    if (err.code === 'MOUNT_NOT_FOUND') {
      const bare = await bareTargetHint(err, args, client);
      if (bare) out.message = `${out.message.replace(/; list mounts with `filestore mounts list`$/, '')}; ${bare}`;
    }
    const hint = authHint(err);
    if (hint) out.hint = hint;
    return out;
  }
  if (err instanceof FilestoreCommandPendingError) {
    const e = err.journalEntry;
    return {
      code: 'COMMAND_PENDING',
      message: e
        ? `agent "${err.agentId}" is still running the command (journal entry ${e.id}); follow it with \`filestore journal --mount ${e.mountId}\``
        : `the command waits in agent "${err.agentId}"'s queue and runs when that agent takes it; look at the result later with \`filestore ls\``,
      details: { agentId: err.agentId, idempotencyKey: err.idempotencyKey, journalEntryId: e?.id ?? null },
      plain: true,
    };
  }
  if (err instanceof FilestoreUnreachableError) {
    const lost = err.networkCode !== undefined && !isUnreachable(err.networkCode);
    return {
      code: 'UNREACHABLE',
      message: lost
        ? `lost the connection to Filestore at ${err.url} before it answered (${err.networkCode}); the command may or may not have been applied: look (\`filestore stat\`, \`filestore ls\`) before running it again`
        : err.message,
      details: { url: err.url, ...(err.networkCode ? { networkCode: err.networkCode } : {}) },
      plain: true,
    };
  }
  if (err instanceof FilestoreClientError) return { code: 'CLIENT_ERROR', message: err.message, plain: true };
  if (err instanceof FilestoreError) {
    const out: CliError = { code: err.code, message: err.message };
    if (err.details) out.details = err.details;
    return out;
  }
  const e = err as { code?: unknown; message?: string; port?: unknown; address?: unknown };
  if (e.code === 'EADDRINUSE') return portInUse(e);
  if (e.code === 'ECONNREFUSED') return { code: 'UNAVAILABLE', message: 'cannot reach PostgreSQL; set DATABASE_URL or start the server (see README)', plain: true };
  return { code: 'ERROR', message: e.message ?? String(err), plain: true };
}

/** A taken port at `filestore start` or `filestore agent`. */
export function portInUse(e: { port?: unknown; address?: unknown }): CliError {
  const port = typeof e.port === 'number' ? e.port : Number(process.env.PORT ?? 4300);
  const on = typeof e.address === 'string' ? ` on ${e.address}` : '';
  return { code: 'PORT_IN_USE', message: `port ${port} is in use${on}: set PORT (or FILESTORE_HOST)`, details: { port, ...(on ? { host: e.address } : {}) }, plain: true };
}

/** A person's two lines (message and code, then any hint), or the JSON document. */
export function formatError(e: CliError, json: boolean): string {
  if (json) return JSON.stringify({ error: { code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) } });
  return `filestore: ${e.plain ? e.message : `${e.message} (${e.code})`}${e.hint ? `\n${e.hint}` : ''}`;
}

function authHint(err: FilestoreApiError): string | undefined {
  if (err.code === 'UNAUTHENTICATED') {
    return process.env.FILESTORE_TOKEN
      ? "hint: FILESTORE_TOKEN is not a token this server knows; set it to one listed (as its sha256) in the server's FILESTORE_API_TOKENS"
      : 'hint: set FILESTORE_TOKEN to an API token of this server (make one with `filestore token create --name NAME --scopes read,write`)';
  }
  if (err.code === 'FORBIDDEN') {
    const needed = typeof err.details?.requiredScope === 'string' ? err.details.requiredScope : /needs scope (filestore:[a-z]+)/.exec(err.message)?.[1];
    return `hint: set FILESTORE_TOKEN to a token with scope ${needed ?? 'filestore:write (or filestore:admin for mounts)'}`;
  }
  return undefined;
}
