// What the shells may use of the HTTP API: tokens and their scopes (light). The server itself is
// in index-serve.ts (the app and its routes), the Lambda adapter in lambda/index.ts.
export { resolveAuth } from './auth-config.ts';
export { Authenticator, hashToken, parseTokenEntries, SCOPES, type Principal, type Scope, TokenEntry } from './auth.ts';
