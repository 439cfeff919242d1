import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { FilestoreError } from '../errors.ts';
import { DISPATCHED_COMMANDS, type CommandMessage, type CommandReply, type UnsignedCommand } from './messages.ts';

/**
 * Dispatched commands are signed (HMAC-SHA256) by the API process that queues them and
 * verified by the agent before it runs them: anyone who can write to Redis can put a job on
 * `filestore-commands-<agentId>`, only a holder of FILESTORE_COMMAND_SECRET can sign one.
 * The MAC covers everything the message carries (command, mount, input, principal,
 * correlation id, idempotency key, target agent, expiry) and the queue prefix (the
 * catalogue's), so a message cannot be moved to another catalogue's queues on the same Redis.
 * BullMQ runs a stalled job again on purpose, so replays are bounded by the expiry, not
 * refused by a one-time id: a replay within it carries the same idempotency key, which the
 * journal answers with the first run's result. The agent's reply is signed too (over the job
 * id and the reply), so a writer to Redis cannot make the API report an outcome the agent
 * never gave. See docs/filestore.md.
 */

/** Shortest accepted secret: 32 characters (`openssl rand -hex 32` gives 64). */
export const COMMAND_SECRET_MIN_LENGTH = 32;
/**
 * How long a queued command stays valid (sender's clock; FILESTORE_COMMAND_TTL_MS): long enough
 * for a busy agent's backlog (four long copies at the default concurrency) or a slow restart.
 * The expiry only bounds replays of a captured message; a genuine one replayed is answered
 * from the journal by its idempotency key.
 */
export const DEFAULT_COMMAND_TTL_MS = 15 * 60_000;
/** Clock difference between API hosts and agents tolerated on the expiry (hosts are assumed NTP-synchronised). */
export const DEFAULT_CLOCK_SKEW_MS = 30_000;

/** Why a process that dispatches or runs commands through Redis does not start without a secret. */
export const MISSING_SECRET_MESSAGE =
  'FILESTORE_COMMAND_SECRET is required when commands go through Redis (REDIS_URL=redis://…): API processes sign the commands they queue for agents with it, and agents run only commands that verify. ' +
  `Give every API process and agent of the deployment the same secret of at least ${COMMAND_SECRET_MIN_LENGTH} characters, e.g. from \`openssl rand -hex 32\``;

const LABEL = 'filestore-command-v1';
const REPLY_LABEL = 'filestore-command-reply-v1';
const MAC_BYTES = 32;
// BullMQ's own prefix when none is given.
const BULLMQ_PREFIX = 'bull';

/** `future`: an expiry further ahead than TTL + skew allows (another TTL, a clock far off, or a message made to last). */
export type RejectionReason = 'malformed' | 'forged' | 'expired' | 'future';

export type Verdict =
  /** `key`: which secret verified it; the reply is signed with the same one (the sender knows it). */
  | { ok: true; message: CommandMessage; key: number }
  | { ok: false; reason: RejectionReason; /** For the log: never the secret nor the MAC. */ detail: string; key?: number };

export interface VerifyOptions {
  /** The verifying agent: a message signed for another agent is refused. */
  agentId: string;
  /** The queues' prefix (the catalogue's): a message signed for another prefix is refused. */
  queuePrefix: string | undefined;
  /** The verifier's clock, ms since the epoch. */
  now: number;
  skewMs?: number | undefined;
  /** The longest expiry accepted is now + ttlMs + skewMs (default DEFAULT_COMMAND_TTL_MS). */
  ttlMs?: number | undefined;
}

/** Whom a reply answers: the job (its id) on one agent's queue under one prefix. */
export interface ReplyAddress {
  agentId: string;
  queuePrefix: string | undefined;
  jobId: string;
}

/** Signs with the first secret of the list and verifies with any of them (rotation: add the new one first, drop the old one later). */
export class CommandSigner {
  private readonly keys: Buffer[];
  private readonly replyKeys: Buffer[];

  constructor(secrets: readonly string[]) {
    if (secrets.length === 0) throw new FilestoreError('CONFIG_ERROR', 'FILESTORE_COMMAND_SECRET: no secret given');
    for (const s of secrets) {
      if (s.length < COMMAND_SECRET_MIN_LENGTH) {
        throw new FilestoreError('CONFIG_ERROR', `FILESTORE_COMMAND_SECRET: each secret needs at least ${COMMAND_SECRET_MIN_LENGTH} characters (make one with \`openssl rand -hex 32\`)`);
      }
    }
    // A key derived for this one purpose: the raw secret is never a MAC key, and may later key other things.
    this.keys = secrets.map((s) => Buffer.from(hkdfSync('sha256', s, '', LABEL, MAC_BYTES)));
    this.replyKeys = secrets.map((s) => Buffer.from(hkdfSync('sha256', s, '', REPLY_LABEL, MAC_BYTES)));
  }

  /** Signs a command for the queues under `queuePrefix` (the catalogue's). */
  sign(unsigned: UnsignedCommand, queuePrefix: string | undefined): CommandMessage {
    return { ...unsigned, signature: mac(this.keys[0] as Buffer, commandText(unsigned, queuePrefix)) };
  }

  /** Whether `data` (a job's payload, as anyone may have written it) is a command signed for `o.agentId` and this prefix, not expired. */
  verify(data: unknown, o: VerifyOptions): Verdict {
    const shape = checkShape(data);
    if (shape) return { ok: false, reason: 'malformed', detail: shape };
    const m = data as CommandMessage;
    if (m.signature === undefined) return { ok: false, reason: 'forged', detail: 'unsigned' };
    const envelope = checkEnvelope(m as unknown as Record<string, unknown>);
    if (envelope) return { ok: false, reason: 'malformed', detail: envelope };
    const given = Buffer.from(m.signature, 'base64url');
    const { signature: _, ...unsigned } = m;
    const key = matchingKey(this.keys, commandText(unsigned, o.queuePrefix), given);
    if (key < 0) return { ok: false, reason: 'forged', detail: 'signature does not verify (another secret, another queue prefix, or altered)' };
    if (m.agentId !== o.agentId) return { ok: false, reason: 'forged', detail: `signed for agent ${JSON.stringify(m.agentId)}`, key };
    const skew = o.skewMs ?? DEFAULT_CLOCK_SKEW_MS;
    const late = o.now - m.expiresAt;
    if (late > skew) {
      return { ok: false, reason: 'expired', detail: `expired ${Math.round(late / 1000)} s ago (at ${new Date(m.expiresAt).toISOString()})`, key };
    }
    // A message valid for longer than any sender makes one would let a captured copy be replayed for that long.
    const ahead = m.expiresAt - o.now;
    const longest = (o.ttlMs ?? DEFAULT_COMMAND_TTL_MS) + skew;
    if (ahead > longest) {
      return { ok: false, reason: 'future', detail: `expires ${Math.round(ahead / 1000)} s from now, more than the ${Math.round(longest / 1000)} s accepted`, key };
    }
    return { ok: true, message: m, key };
  }

  /** The reply with its MAC over the job it answers, by the secret that verified the command (default: the first). */
  signReply(reply: CommandReply, to: ReplyAddress, key = 0): CommandReply {
    const { mac: _, ...bare } = reply;
    return { ...bare, mac: mac(this.replyKeys[key] ?? (this.replyKeys[0] as Buffer), replyText(bare, to)) };
  }

  /** `value` (a job's return value, as anyone may have written it) as the agent's reply to that job, or null when it does not verify. */
  verifyReply(value: unknown, to: ReplyAddress): CommandReply | null {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
    const r = value as CommandReply;
    if (typeof r.mac !== 'string' || typeof r.ok !== 'boolean') return null;
    const { mac: given, ...bare } = r;
    return matchingKey(this.replyKeys, replyText(bare, to), Buffer.from(given, 'base64url')) < 0 ? null : r;
  }
}

const commandText = (unsigned: UnsignedCommand, queuePrefix: string | undefined): string => `${queuePrefix ?? BULLMQ_PREFIX}\n${canonical(unsigned)}`;

const replyText = (reply: Omit<CommandReply, 'mac'>, to: ReplyAddress): string =>
  `${to.queuePrefix ?? BULLMQ_PREFIX}\n${to.agentId}\n${to.jobId}\n${canonical(reply)}`;

/** The index of the key whose MAC of `text` is `given` (-1: none), compared in constant time. */
function matchingKey(keys: Buffer[], text: string, given: Buffer): number {
  if (given.length !== MAC_BYTES) return -1;
  return keys.findIndex((k) => timingSafeEqual(Buffer.from(mac(k, text), 'base64url'), given));
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
  return null;
}

/** What is wrong with a command's target, expiry and signature fields (null: nothing). */
function checkEnvelope(m: Record<string, unknown>): string | null {
  if (typeof m.agentId !== 'string') return 'no agentId';
  // Required: a signed message without an expiry would be valid for ever.
  if (typeof m.expiresAt !== 'number' || !Number.isFinite(m.expiresAt)) return 'no finite numeric expiresAt';
  if (typeof m.signature !== 'string') return 'signature not a string';
  return null;
}
