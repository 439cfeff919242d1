import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { FilestoreError } from '../errors.ts';
import { DISPATCHED_COMMANDS, type CommandMessage, type UnsignedCommand } from './messages.ts';

/**
 * Dispatched commands are signed (HMAC-SHA256) by the API process that queues them and
 * verified by the agent before it runs them: anyone who can write to Redis can put a job on
 * `filestore-commands-<agentId>`, only a holder of FILESTORE_COMMAND_SECRET can sign one.
 * The MAC covers everything the message carries (command, mount, input, principal,
 * correlation id, idempotency key, target agent, expiry). BullMQ runs a stalled job again on
 * purpose, so replays are bounded by the expiry, not refused by a one-time id: a replay
 * within it replays the same idempotency key (the first run's result). See docs/filestore.md.
 */

/** Shortest accepted secret: 32 characters (`openssl rand -hex 32` gives 64). */
export const COMMAND_SECRET_MIN_LENGTH = 32;
/** How long a queued command stays valid (sender's clock): the router's 25 s wait, an agent's restart, a busy worker. */
export const DEFAULT_COMMAND_TTL_MS = 120_000;
/** Clock difference between API hosts and agents tolerated on the expiry (hosts are assumed NTP-synchronised). */
export const DEFAULT_CLOCK_SKEW_MS = 30_000;

/** Why a process that dispatches or runs commands through Redis does not start without a secret. */
export const MISSING_SECRET_MESSAGE =
  'FILESTORE_COMMAND_SECRET is required when commands go through Redis (REDIS_URL=redis://…): API processes sign the commands they queue for agents with it, and agents run only commands that verify. ' +
  `Give every API process and agent of the deployment the same secret of at least ${COMMAND_SECRET_MIN_LENGTH} characters, e.g. from \`openssl rand -hex 32\``;

const LABEL = 'filestore-command-v1';
const MAC_BYTES = 32;

export type RejectionReason = 'malformed' | 'forged' | 'expired';

export type Verdict =
  | { ok: true; message: CommandMessage }
  | { ok: false; reason: RejectionReason; /** For the log: never the secret nor the MAC. */ detail: string };

export interface VerifyOptions {
  /** The verifying agent: a message signed for another agent is refused. */
  agentId: string;
  /** The verifier's clock, ms since the epoch. */
  now: number;
  skewMs?: number | undefined;
}

/** Signs with the first secret of the list and verifies with any of them (rotation: add the new one first, drop the old one later). */
export class CommandSigner {
  private readonly keys: Buffer[];

  constructor(secrets: readonly string[]) {
    if (secrets.length === 0) throw new FilestoreError('CONFIG_ERROR', 'FILESTORE_COMMAND_SECRET: no secret given');
    for (const s of secrets) {
      if (s.length < COMMAND_SECRET_MIN_LENGTH) {
        throw new FilestoreError('CONFIG_ERROR', `FILESTORE_COMMAND_SECRET: each secret needs at least ${COMMAND_SECRET_MIN_LENGTH} characters (make one with \`openssl rand -hex 32\`)`);
      }
    }
    // A key derived for this one purpose: the raw secret is never a MAC key, and may later key other things.
    this.keys = secrets.map((s) => Buffer.from(hkdfSync('sha256', s, '', LABEL, MAC_BYTES)));
  }

  sign(unsigned: UnsignedCommand): CommandMessage {
    return { ...unsigned, signature: mac(this.keys[0] as Buffer, canonical(unsigned)) };
  }

  /** Whether `data` (a job's payload, as anyone may have written it) is a command signed for `o.agentId` and not expired. */
  verify(data: unknown, o: VerifyOptions): Verdict {
    const shape = checkShape(data);
    if (shape) return { ok: false, reason: 'malformed', detail: shape };
    const m = data as CommandMessage;
    if (typeof m.signature !== 'string') return { ok: false, reason: 'forged', detail: 'unsigned' };
    const given = Buffer.from(m.signature, 'base64url');
    const { signature: _, ...unsigned } = m;
    const text = canonical(unsigned);
    const genuine = given.length === MAC_BYTES && this.keys.some((k) => timingSafeEqual(Buffer.from(mac(k, text), 'base64url'), given));
    if (!genuine) return { ok: false, reason: 'forged', detail: 'signature does not verify' };
    if (m.agentId !== o.agentId) return { ok: false, reason: 'forged', detail: `signed for agent "${m.agentId}"` };
    const late = o.now - m.expiresAt;
    if (late > (o.skewMs ?? DEFAULT_CLOCK_SKEW_MS)) {
      return { ok: false, reason: 'expired', detail: `expired ${Math.round(late / 1000)} s ago (at ${new Date(m.expiresAt).toISOString()})` };
    }
    return { ok: true, message: m };
  }
}

/** The secrets of FILESTORE_COMMAND_SECRET: comma-separated, the first signs. */
export function parseCommandSecrets(value: string): string[] {
  return value.split(',').map((s) => s.trim());
}

const mac = (key: Buffer, text: string): string => createHmac('sha256', key).update(LABEL).update('\n').update(text).digest('base64url');

/**
 * JSON with object keys sorted at every level, of the value as JSON carries it (undefined
 * members dropped, as the queue drops them): the sender and the agent serialise the same text.
 */
export function canonical(value: unknown): string {
  return stringify(JSON.parse(JSON.stringify(value)) as unknown);
}

function stringify(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stringify).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${stringify(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

/** What is wrong with the message's shape (null: nothing), checked before any MAC is computed over it. */
function checkShape(data: unknown): string | null {
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return 'not an object';
  const m = data as Record<string, unknown>;
  if (!DISPATCHED_COMMANDS.includes(m.command as never)) return 'no known command';
  if (typeof m.mountId !== 'string') return 'no mountId';
  if (m.input === null || typeof m.input !== 'object' || Array.isArray(m.input)) return 'no input';
  const c = m.context as Record<string, unknown> | null | undefined;
  if (c === null || typeof c !== 'object' || typeof c.idempotencyKey !== 'string') return 'no context with an idempotency key';
  for (const k of ['principal', 'correlationId'] as const) if (c[k] !== undefined && typeof c[k] !== 'string') return `context.${k} not a string`;
  if (m.agentId !== undefined && typeof m.agentId !== 'string') return 'agentId not a string';
  if (m.expiresAt !== undefined && !Number.isFinite(m.expiresAt)) return 'expiresAt not a number';
  if (m.signature !== undefined && typeof m.signature !== 'string') return 'signature not a string';
  return null;
}
