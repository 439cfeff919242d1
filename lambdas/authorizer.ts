import type { APIGatewayRequestAuthorizerEventV2, APIGatewaySimpleAuthorizerResult, APIGatewaySimpleAuthorizerWithContextResult } from 'aws-lambda';
import { Authenticator, parseTokenEntries, type Principal } from '../shared/api/index.ts';
import { FilestoreError } from '../shared/index.ts';
import { loadAuthorizerConfig } from './support/config.ts';
import { plainLambdaHandler } from './support/instrument.ts';
import { logger } from './support/logger.ts';
import { containerSecrets } from './support/secrets.ts';

/**
 * The HTTP API's Lambda authorizer (payload format 2.0, simple responses): a bearer token
 * whose sha256 is among the configured hashes is allowed, with its name and every scope it
 * has as context — `{ principal, scopes: "read write" }` — which the API Lambda reads from
 * `requestContext.authorizer.lambda`. An unknown, missing or malformed token is
 * `{ isAuthorized: false }` (API Gateway answers 403 / 401), never an exception.
 *
 * Caching: API Gateway caches an answer per identity source, which must be
 * `$request.header.Authorization` alone, so one cached answer serves one token. The answer
 * carries all the token's scopes, not the scope of the route first asked for, and the API
 * Lambda checks each route's scope itself: a cached answer reused on another route grants
 * nothing that route needs and the token lacks.
 *
 * The hashes come from Secrets Manager (FILESTORE_API_TOKENS_SECRET_ARN; the secret is the
 * JSON of FILESTORE_API_TOKENS), read once per container and FILESTORE_SECRETS_TTL_SECONDS:
 * a revoked token stops working within that TTL plus the authorizer cache's. A secret that
 * cannot be read throws (API Gateway answers 500, and caches nothing).
 */

export type AuthorizerContextValues = { principal: string; scopes: string };
export type AuthorizerResult = APIGatewaySimpleAuthorizerResult | APIGatewaySimpleAuthorizerWithContextResult<AuthorizerContextValues>;

// The authenticator of the secret's current text: rebuilt only when the text changed.
let built: { raw: string; authenticator: Authenticator } | null = null;

async function authenticator(): Promise<Authenticator> {
  const config = loadAuthorizerConfig();
  const raw = 'secretArn' in config.tokens ? await containerSecrets(config.secretsTtlMs).get(config.tokens.secretArn) : config.tokens.value;
  if (built?.raw !== raw) built = { raw, authenticator: new Authenticator({ tokens: parseTokenEntries(raw) }) };
  return built.authenticator;
}

export const handler = plainLambdaHandler('authorizer', async (event: APIGatewayRequestAuthorizerEventV2): Promise<AuthorizerResult> => {
  const auth = await authenticator();
  let principal: Principal;
  try {
    principal = auth.authenticate(event.headers?.authorization ?? event.identitySource?.[0]);
  } catch (err) {
    if (!(err instanceof FilestoreError) || err.code !== 'UNAUTHENTICATED') throw err;
    logger.info('denied', { reason: err.message, routeKey: event.routeKey });
    return { isAuthorized: false };
  }
  const scopes = [...principal.scopes].map((s) => s.replace(/^filestore:/, '')).join(' ');
  return { isAuthorized: true, context: { principal: principal.name, scopes } };
});
