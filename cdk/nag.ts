import { CfnResource, Validations, type Stack } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';
import type { Compute } from './constructs/compute.ts';
import type { Data } from './constructs/data.ts';
import type { Schedules } from './constructs/schedules.ts';
import type { Secrets } from './constructs/secrets.ts';
import type { Storage } from './constructs/storage.ts';

/** What the acknowledgements look at: the stack's constructs (FilestoreStack has them; stack.ts calls this, so nag.ts names no stack.ts). */
export interface AcknowledgedStack extends Stack {
  readonly data: Data;
  readonly secrets: Secrets;
  readonly storage: Storage;
  readonly compute: Compute;
  readonly schedules: Schedules;
}

/** One acknowledged cdk-nag finding: the rule (with its finding, if any), where, and why. */
export interface Acknowledged {
  id: string;
  path: string;
  reason: string;
}

/** Every acknowledgement made, for the tests and the closing report. */
export const ACKNOWLEDGED = new WeakMap<AcknowledgedStack, Acknowledged[]>();

/**
 * The cdk-nag AwsSolutions findings this stack acknowledges (cdk-nag v3:
 * `Validations.of(construct).acknowledge`), each with a reason specific to Filestore. Anything
 * else nag finds fails synthesis.
 */
export function acknowledgeFindings(stack: AcknowledgedStack): void {
  const list: Acknowledged[] = [];
  ACKNOWLEDGED.set(stack, list);
  const ack = (scope: IConstruct, id: string, reason: string) => {
    Validations.of(scope).acknowledge({ id, reason });
    list.push({ id, path: scope.node.path, reason });
  };
  const logicalId = (c: IConstruct) => stack.getLogicalId((c.node.defaultChild ?? c) as CfnResource);
  const f = stack.compute.functions;

  ack(stack.data.database, 'AwsSolutions-RDS11', 'PostgreSQL keeps 5432: the proxy\'s clients (the Lambdas and on-prem agents, FILESTORE_DB_PORT) expect it, and the instance is reachable only from the proxy and the rotation function (security groups, isolated subnets); on-prem agents reach the proxy alone');
  ack(stack.data.redisAuthSecret, 'AwsSolutions-SMG4', 'The Redis AUTH token has no rotation function for ElastiCache in Secrets Manager; it is rotated by hand (modify-replication-group --auth-token-update-strategy ROTATE, then the secret), see docs/deploy.md');
  ack(stack.secrets.apiTokens, 'AwsSolutions-SMG4', 'The API token hashes are a list the operator edits (tokens added and revoked with `npx filestore token hash`), not a credential a rotation function could regenerate');
  ack(stack.secrets.commandSecret, 'AwsSolutions-SMG4', 'The command secret is shared with the on-prem agents, which must learn a new value before the api function signs with it: rotated by hand as "new,old" (comma-separated, the first signs), see docs/deploy.md');

  for (const [name, fn] of Object.entries(f)) {
    ack(fn, 'AwsSolutions-L1', `The ${name} bundle is built for and tested under Node 24 (nodejs24.x, SPEC §10; CI runs the bundles under Node 24); nodejs26.x is not yet tested`);
    const role = fn.role as IConstruct;
    const xray = `X-Ray (tracing active on the ${name} function) has no resource-level permissions for xray:PutTraceSegments and PutTelemetryRecords`;
    ack(
      role,
      'AwsSolutions-IAM5[Resource::*]',
      name === 'authorizer'
        ? `${xray}, so they need "*" (the authorizer runs outside the VPC; its logs go to its own log group only)`
        : `Two statements of the ${name} function's role need "*": ${xray}, and Lambda manages the function's VPC network interfaces with ec2:CreateNetworkInterface/DescribeNetworkInterfaces/DeleteNetworkInterface… (DescribeNetworkInterfaces works only on "*"); its logs go to its own log group only`,
    );
  }
  // S3 object ARNs end in a wildcard: the mount's prefix and every key below it.
  for (const { mount, bucket } of stack.storage.mounts) {
    const arn = CfnResource.isCfnResource(bucket.node.defaultChild) ? `<${logicalId(bucket)}.Arn>` : `arn:<AWS::Partition>:s3:::${mount.bucket}`;
    for (const name of ['api', 's3-events', 'audit', 'reconcile', 'maintenance'] as const) {
      ack(f[name].role as IConstruct, `AwsSolutions-IAM5[Resource::${arn}/${mount.prefix}*]`, `S3 mount ${mount.key}: the objects below its prefix "${mount.prefix}" are the mount's files, and only those are granted to the ${name} function`);
    }
  }
  // EventBridge Scheduler's roles invoke the function and its versions/aliases.
  for (const [role, fn] of [
    [stack.schedules.auditRole, f.audit],
    [stack.schedules.maintenanceRole, f.maintenance],
  ] as const) {
    ack(role, `AwsSolutions-IAM5[Resource::<${logicalId(fn)}.Arn>:*]`, `The EventBridge Scheduler role may invoke the ${fn.node.id} function and its versions (the ":*" of lambda:InvokeFunction), nothing else`);
  }
  ack(stack.schedules.dlq, 'AwsSolutions-SQS3', 'This queue is itself the dead-letter queue of the EventBridge Scheduler schedules that invoke the audit and maintenance functions (not an SQS redrive target), alarmed on depth (SchedulesDlqDepth)');

  // Singletons CDK adds: the RDS log exports' retention and the S3 notification configurator.
  for (const child of stack.node.children) {
    if (child.node.id.startsWith('LogRetention')) {
      ack(child, 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]', 'CDK\'s log-retention singleton (it sets the retention of the RDS log exports, postgresql and upgrade) comes with this AWS managed policy, which allows writing any log group of the account; accepted for CDK\'s own deploy-time helper, not one of the Filestore functions (those have inline, per-log-group grants)');
      ack(child, 'AwsSolutions-IAM5[Resource::*]', 'CDK\'s log-retention function sets the retention of the RDS log groups, whose names RDS chooses at deploy');
    }
    if (child.node.id.startsWith('BucketNotificationsHandler')) {
      ack(child, 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]', 'CDK\'s S3 notification configurator (it writes the mounted buckets\' notifications at deploy time only) comes with this AWS managed policy, which allows writing any log group of the account; accepted for CDK\'s own helper, not one of the Filestore functions');
    }
  }
}
