import { ArnFormat, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as rds from 'aws-cdk-lib/aws-rds';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { DATABASE_USER } from './data.ts';

/**
 * What an on-prem agent's AWS identity may do (SPEC §11 on-prem agents), as a managed policy
 * the operator attaches to the agents' role or user (IAM Roles Anywhere, a hybrid host's
 * instance profile, or a user's keys):
 * - `rds-db:connect` on the proxy as DATABASE_USER: the agent connects through RDS Proxy with
 *   IAM auth (FILESTORE_DB_IAM_AUTH=true), signing a token per new connection with this
 *   identity: no database password on the host, nothing to restart after a rotation;
 * - read the secrets whose values go into the agent's environment at rollout: the Redis AUTH
 *   token (REDIS_URL), the command secret it verifies dispatched commands with, and the API
 *   token hashes its local API checks (clients are redirected to it for file transfers with
 *   their tokens). Never the database secret: only the proxy and its rotation function read it.
 * No S3: S3 mounts' jobs run in the Lambdas (docs/aws.md, "Whose job is it").
 */
export class AgentAccess extends Construct {
  readonly policy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: { proxy: rds.IDatabaseProxy; secrets: secretsmanager.ISecret[] }) {
    super(scope, id);
    // The dbuser ARN exactly as DatabaseProxy.grantConnect builds the Lambdas' (a managed
    // policy is no grantee): the proxy's resource id (prx-…) is its ARN's resource name.
    const stack = Stack.of(this);
    const proxyResourceId = stack.splitArn(props.proxy.dbProxyArn, ArnFormat.COLON_RESOURCE_NAME).resourceName;
    const dbUser = stack.formatArn({ service: 'rds-db', resource: 'dbuser', resourceName: `${proxyResourceId}/${DATABASE_USER}`, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
    this.policy = new iam.ManagedPolicy(this, 'Policy', {
      description: 'Filestore on-prem agents: the database through RDS Proxy (IAM auth), the Redis AUTH token, the command secret, the API token hashes',
      statements: [
        new iam.PolicyStatement({ sid: 'ConnectThroughProxy', actions: ['rds-db:connect'], resources: [dbUser] }),
        new iam.PolicyStatement({ sid: 'ReadAgentSecrets', actions: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'], resources: props.secrets.map((s) => s.secretArn) }),
      ],
    });
  }
}
