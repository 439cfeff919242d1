import { FilestoreError } from '../errors.ts';
import { isLoopback, parseTokenEntries, type TokenEntry } from './auth.ts';

/** How a server authenticates, from FILESTORE_AUTH, FILESTORE_API_TOKENS and the address it binds. */
export function resolveAuth(o: { mode: 'auto' | 'required' | 'off'; tokens?: string | undefined; host: string }): {
  tokens: TokenEntry[];
  disabled: boolean;
} {
  const tokens = o.tokens ? parseTokenEntries(o.tokens) : [];
  const disabled = o.mode === 'off' || (o.mode === 'auto' && tokens.length === 0 && isLoopback(o.host));
  if (disabled && !isLoopback(o.host)) {
    throw new FilestoreError('CONFIG_ERROR', `FILESTORE_AUTH=off is only allowed on a loopback address, not ${o.host}`);
  }
  if (!disabled && tokens.length === 0) {
    throw new FilestoreError('CONFIG_ERROR', `the API on ${o.host} needs tokens: set FILESTORE_API_TOKENS (create one with \`filestore token create\`)`);
  }
  return { tokens, disabled };
}
