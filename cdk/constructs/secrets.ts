import { SecretValue } from 'aws-cdk-lib';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

/**
 * Filestore's own secrets (SPEC §11 secrets; the database's and Redis's are in Data): the API
 * token hashes (the JSON of FILESTORE_API_TOKENS, `[{name, sha256, scopes}]`, empty at first:
 * the operator adds the first admin token's hash), and the command secret the Lambdas sign
 * commands dispatched to on-prem agents with, which the agents verify (generated: 64 letters
 * and digits; comma-separated values rotate it, the first signs).
 */
export class Secrets extends Construct {
  readonly apiTokens: secretsmanager.Secret;
  readonly commandSecret: secretsmanager.Secret;

  constructor(scope: Construct, id: string) {
    super(scope, id);
    this.apiTokens = new secretsmanager.Secret(this, 'ApiTokens', {
      description: 'Filestore: the API token hashes, JSON [{"name", "sha256", "scopes"}] (npx filestore token hash)',
      // Not a secret value: an empty list of hashes, replaced by the operator (put-secret-value).
      secretStringValue: SecretValue.unsafePlainText('[]'),
    });
    this.commandSecret = new secretsmanager.Secret(this, 'CommandSecret', {
      description: 'Filestore: the secret commands dispatched to on-prem agents are signed with (comma-separated to rotate; the first signs)',
      generateSecretString: { passwordLength: 64, excludePunctuation: true, includeSpace: false },
    });
  }
}
