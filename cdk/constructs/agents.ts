import { ArnFormat, Fn, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as rds from 'aws-cdk-lib/aws-rds';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { DATABASE_USER } from './data.ts';

/**
 * What an on-prem agent's AWS identity may do (SPEC §11 on-prem agents), as a managed policy
 * the operator attaches to the agents' role or user (IAM Roles Anywhere, a hybrid host's
 * instance profile, or a user's keys): read the secrets an agent needs — the database
 * credentials (agents connect to the instance with the password over TLS), the Redis AUTH
 * token, the command secret it verifies dispatched commands with, the API token hashes its
 * local API checks — and `rds-db:connect` on the proxy as DATABASE_USER, for tools that sign
 * IAM tokens. No S3: S3 mounts' jobs run in the Lambdas (docs/aws.md, "Whose job is it").
 */
export class AgentAccess extends Construct {
  readonly policy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, props: { proxy: rds.IDatabaseProxy; secrets: secretsmanager.ISecret[] }) {
    super(scope, id);
    // The proxy's resource id is the last part of its ARN (as DatabaseProxy.grantConnect builds it).
    const proxyResourceId = Fn.select(6, Fn.split(':', props.proxy.dbProxyArn));
    const dbUser = Stack.of(this).formatArn({ service: 'rds-db', resource: 'dbuser', resourceName: `${proxyResourceId}/${DATABASE_USER}`, arnFormat: ArnFormat.COLON_RESOURCE_NAME });
    this.policy = new iam.ManagedPolicy(this, 'Policy', {
      description: 'Filestore on-prem agents: their secrets and the database proxy',
      statements: [
        new iam.PolicyStatement({ sid: 'ReadAgentSecrets', actions: ['secretsmanager:GetSecretValue', 'secretsmanager:DescribeSecret'], resources: props.secrets.map((s) => s.secretArn) }),
        new iam.PolicyStatement({ sid: 'ConnectThroughProxy', actions: ['rds-db:connect'], resources: [dbUser] }),
      ],
    });
  }
}
