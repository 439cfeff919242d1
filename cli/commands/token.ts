import { randomBytes } from 'node:crypto';
import { InvalidArgumentError, type Command } from 'commander';
import { SCOPES, TokenEntry, hashToken, type Scope } from '../../shared/api/index.ts';
import { print, printJson, type JsonOption } from '../output.ts';

/** `read,write` or `filestore:read` → the scopes of FILESTORE_API_TOKENS. */
function parseScopes(value: string): Scope[] {
  const scopes = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (scopes.length === 0) throw new InvalidArgumentError('name at least one scope: read, write or admin');
  return scopes.map((s) => {
    const full = s.startsWith('filestore:') ? s : `filestore:${s}`;
    if (!(SCOPES as readonly string[]).includes(full)) throw new InvalidArgumentError(`unknown scope "${s}": use read, write or admin`);
    return full as Scope;
  });
}

function parseName(value: string): string {
  if (!TokenEntry.shape.name.safeParse(value).success) throw new InvalidArgumentError('1 to 64 letters, digits, _ . @ or -');
  return value;
}

/**
 * `filestore token create` and `filestore token hash`: made on this machine, no server
 * involved. The server is configured with the token's sha256 only, never the token.
 */
export function registerToken(program: Command): void {
  const token = program.command('token').description('create API tokens for FILESTORE_API_TOKENS');

  token
    .command('create')
    .description('generate a token and the FILESTORE_API_TOKENS entry that admits it')
    .requiredOption('--name <name>', 'who or what uses it (journaled as the principal of its commands)', parseName)
    .requiredOption('--scopes <list>', 'comma-separated: read, write, admin (each includes the ones before it)', parseScopes)
    .option('--json', 'print {"token", "entry"} as JSON')
    .action((o: JsonOption & { name: string; scopes: Scope[] }) => {
      const secret = `fs_${randomBytes(32).toString('base64url')}`;
      const entry = { name: o.name, sha256: hashToken(secret), scopes: [...new Set(o.scopes)] };
      if (o.json) return printJson({ token: secret, entry });
      print('token (shown only now; give it to the client as FILESTORE_TOKEN):');
      print(`  ${secret}`);
      print('');
      print('add this entry to the server\'s FILESTORE_API_TOKENS (a JSON array) and restart it:');
      print(`  ${JSON.stringify(entry)}`);
    });

  token
    .command('hash')
    .description('print the sha256 of a token, as FILESTORE_API_TOKENS holds it')
    .argument('<token>', 'the token')
    .action((secret: string) => print(hashToken(secret)));
}
