import { AsyncLocalStorage } from 'node:async_hooks';
import crypto, { createHash } from 'node:crypto';
import { z } from 'zod';
import { FilestoreError } from '../errors.ts';

/**
 * Bearer tokens with scopes. Tokens are configured as sha256 hashes (FILESTORE_API_TOKENS),
 * so neither the configuration nor the process holds a usable secret; a presented token is
 * hashed and looked up. Scopes nest: admin ⊃ write ⊃ read.
 */
export const SCOPES = ['filestore:read', 'filestore:write', 'filestore:admin'] as const;
export type Scope = (typeof SCOPES)[number];

const IMPLIED: Record<Scope, Scope[]> = {
  'filestore:read': ['filestore:read'],
  'filestore:write': ['filestore:read', 'filestore:write'],
  'filestore:admin': ['filestore:read', 'filestore:write', 'filestore:admin'],
};

export interface Principal {
  /** The token's name (journaled as the command's principal); "anonymous" when auth is off. */
  name: string;
  scopes: ReadonlySet<Scope>;
}

export const TokenEntry = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.@-]{1,64}$/),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'must be the sha256 of the token, 64 lowercase hex digits'),
    scopes: z.array(z.enum(SCOPES)).min(1),
  })
  .strict();
export type TokenEntry = z.infer<typeof TokenEntry>;

// crypto.hash (one shot, Node ≥ 20.12) costs a third of createHash: this runs on every request.
const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: 'hex') => string }).hash;
export const hashToken = (token: string): string =>
  oneShot ? oneShot('sha256', token, 'hex') : createHash('sha256').update(token, 'utf8').digest('hex');

/** Parses FILESTORE_API_TOKENS (a JSON array of {name, sha256, scopes}); CONFIG_ERROR names the problem. */
export function parseTokenEntries(raw: string): TokenEntry[] {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new FilestoreError('CONFIG_ERROR', 'FILESTORE_API_TOKENS: not JSON; expected [{"name","sha256","scopes"}] (create one with `filestore token create`)');
  }
  const parsed = z.array(TokenEntry).safeParse(value);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new FilestoreError('CONFIG_ERROR', `FILESTORE_API_TOKENS: ${problems}`);
  }
  return parsed.data;
}

const ANONYMOUS: Principal = { name: 'anonymous', scopes: new Set(SCOPES) };

export interface AuthOptions {
  tokens: TokenEntry[];
  /** No authentication: every caller has every scope. Only the loopback-bound embedded default may do this. */
  disabled?: boolean | undefined;
}

export class Authenticator {
  private readonly byHash = new Map<string, Principal>();
  readonly disabled: boolean;

  constructor(o: AuthOptions) {
    this.disabled = o.disabled === true;
    for (const t of o.tokens) this.byHash.set(t.sha256, { name: t.name, scopes: new Set(t.scopes.flatMap((s) => IMPLIED[s])) });
  }

  /** The caller behind an Authorization header; UNAUTHENTICATED when it is missing or unknown. */
  authenticate(authorization: string | undefined): Principal {
    if (this.disabled) return ANONYMOUS;
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!match) {
      throw new FilestoreError('UNAUTHENTICATED', 'missing bearer token: send "Authorization: Bearer <token>" (the CLI reads FILESTORE_TOKEN)');
    }
    const principal = this.byHash.get(hashToken(match[1] as string));
    if (!principal) throw new FilestoreError('UNAUTHENTICATED', 'unknown or revoked token');
    return principal;
  }

  authorize(principal: Principal, scope: Scope): void {
    if (!principal.scopes.has(scope)) {
      throw new FilestoreError('FORBIDDEN', `this route needs scope ${scope}; token "${principal.name}" has ${[...principal.scopes].join(', ')}`, {
        requiredScope: scope,
      });
    }
  }
}

/** What an HTTP API Lambda authorizer returned as context: `{ principal, scopes: "read write admin" }`. */
export interface AuthorizerContext {
  principal?: unknown;
  scopes?: unknown;
}

/**
 * The caller as API Gateway's Lambda authorizer established it (lambdas/authorizer.ts checked
 * the token). The authorizer only says who the caller is: each route's scope is still checked
 * here, so an authorizer cache entry reused across routes can never grant a route's scope.
 * The context travels per invocation in an AsyncLocalStorage, never in a header a client could send.
 */
export class AuthorizerContextAuthenticator extends Authenticator {
  private readonly current = new AsyncLocalStorage<Principal | null>();

  constructor() {
    super({ tokens: [] });
  }

  /** Runs `fn` (one request) as the caller the authorizer context names; null: none given. */
  runAs<T>(context: AuthorizerContext | null | undefined, fn: () => Promise<T>): Promise<T> {
    return this.current.run(principalOf(context), fn);
  }

  override authenticate(): Principal {
    // No context: the authorizer let an unauthenticated request through (a route without it); answered as a missing token.
    return this.current.getStore() ?? super.authenticate(undefined);
  }
}

/** `scopes` names read, write, admin (with or without the `filestore:` prefix), space-separated; unknown words grant nothing. */
function principalOf(context: AuthorizerContext | null | undefined): Principal | null {
  if (!context || typeof context.principal !== 'string' || context.principal === '') return null;
  const words = typeof context.scopes === 'string' ? context.scopes.split(/[\s,]+/) : [];
  const scopes = new Set<Scope>();
  for (const w of words) {
    const scope = (w.startsWith('filestore:') ? w : `filestore:${w}`) as Scope;
    if ((SCOPES as readonly string[]).includes(scope)) for (const s of IMPLIED[scope]) scopes.add(s);
  }
  return { name: context.principal, scopes };
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
