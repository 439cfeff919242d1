import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import type { LambdaBundles, LambdaName } from '../bundles.ts';
import { s3MountsVariable, type FilestoreConfig } from '../config.ts';
import { DATABASE_NAME, DATABASE_PORT, DATABASE_USER, type Data } from './data.ts';
import type { Network } from './network.ts';
import type { Secrets } from './secrets.ts';
import type { MountedBucket, Storage } from './storage.ts';

/** Each function's timeout, memory and pool: docs/aws.md (connections, the reconcile queue). */
export const FUNCTION_SETTINGS: Readonly<Record<LambdaName, { timeout: Duration; memoryMiB: number; poolSize?: number; reserved?: number }>> = {
  // API Gateway cuts at 30 s (FILESTORE_COMMAND_WAIT_MS 20 s + the outbox flush).
  api: { timeout: Duration.seconds(30), memoryMiB: 1024, poolSize: 1 },
  authorizer: { timeout: Duration.seconds(10), memoryMiB: 256 },
  's3-events': { timeout: Duration.seconds(60), memoryMiB: 1024, poolSize: 2 },
  // Works until fewer than 60 s remain, checkpoints; the next schedule continues.
  audit: { timeout: Duration.minutes(15), memoryMiB: 1024, poolSize: 2 },
  reconcile: { timeout: Duration.minutes(15), memoryMiB: 1024, poolSize: 2 },
  // Reserved concurrency 1, the only single runner: scheduled every minute with a 2-minute
  // timeout, a slow pass would otherwise overlap the next one, and overlapping passes only
  // contend for the same outbox/journal locks while holding twice the proxy connections.
  maintenance: { timeout: Duration.minutes(2), memoryMiB: 512, poolSize: 2, reserved: 1 },
  // No reserved concurrency: the trigger invokes it once per deploy, and shared/db/migrate.ts
  // takes a blocking advisory lock, so concurrent runs apply the migrations one after the other.
  // (Each reservation also needs the account's quota to stay ≥ 100 unreserved: docs/deploy.md.)
  migrate: { timeout: Duration.minutes(10), memoryMiB: 512, poolSize: 1 },
};

/** S3-event batches (docs/aws.md: batches of 10). */
export const S3_EVENTS_BATCH_SIZE = 10;
/** One reconcile run may take a whole invocation: one message per invocation (docs/aws.md). */
export const RECONCILE_BATCH_SIZE = 1;
/** The staging area of an S3 mount (shared/backends/s3/staging.ts): `<prefix>.filestore-staging/`. */
export const STAGING_DIR = '.filestore-staging';

export interface ComputeProps {
  config: FilestoreConfig;
  bundles: LambdaBundles;
  network: Network;
  data: Data;
  storage: Storage;
  secrets: Secrets;
}

/**
 * One function per Lambda entry (SPEC §10/§11 compute): nodejs24.x on ARM64 in the VPC's app
 * subnets (all but the authorizer, which reads only its secret), code = the build's bundle (cdk/bundles.ts), X-Ray active, logs kept
 * `logRetentionDays`. Each gets only what it uses: `rds-db:connect` on the proxy (no rds:*
 * management), the secrets it reads, the queues it sends to or consumes, and S3 of the mounted
 * buckets' prefixes only — read for the functions that judge storage (S3-event, audit,
 * reconcile), read and write for the API (writes) and maintenance (journal recovery finishes
 * a partly applied move/copy/delete; the staging sweep deletes staged bytes).
 */
export class Compute extends Construct {
  readonly functions = {} as Record<LambdaName, lambda.Function>;

  constructor(scope: Construct, id: string, props: ComputeProps) {
    super(scope, id);
    const { config, network, data, storage, secrets } = props;
    const runtime = lambda.Runtime.NODEJS_24_X;

    for (const [name, s] of Object.entries(FUNCTION_SETTINGS) as Array<[LambdaName, (typeof FUNCTION_SETTINGS)[LambdaName]]>) {
      // The authorizer reads only its secret (Secrets Manager's public endpoint): outside the
      // VPC it has no network interfaces to manage and no VPC cold start. The others reach the
      // proxy and Redis.
      const inVpc = name !== 'authorizer';
      const logGroup = new logs.LogGroup(this, `${pascal(name)}Logs`, { retention: config.logRetentionDays, removalPolicy: RemovalPolicy.DESTROY });
      // A role of its own without AWS managed policies: AWSLambdaBasicExecutionRole and
      // AWSLambdaVPCAccessExecutionRole both allow writing to every log group of the account.
      // The function writes its own group (created above) and manages its VPC network interfaces.
      const role = new iam.Role(this, `${pascal(name)}Role`, { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'), description: `Filestore ${name} function` });
      logGroup.grantWrite(role);
      if (inVpc) role.addToPolicy(
        new iam.PolicyStatement({
          sid: 'LambdaVpcNetworkInterfaces',
          // Lambda creates and deletes the function's ENIs with its role; DescribeNetworkInterfaces works only on "*".
          actions: ['ec2:CreateNetworkInterface', 'ec2:DescribeNetworkInterfaces', 'ec2:DescribeSubnets', 'ec2:DeleteNetworkInterface', 'ec2:AssignPrivateIpAddresses', 'ec2:UnassignPrivateIpAddresses'],
          resources: ['*'],
        }),
      );
      const fn = new lambda.Function(this, pascal(name), {
        role,
        description: `Filestore ${name} (lambdas/${name}.ts)`,
        runtime,
        architecture: lambda.Architecture.ARM_64,
        handler: `${name}.handler`,
        code: lambda.Code.fromAsset(props.bundles.dirs[name]),
        timeout: s.timeout,
        memorySize: s.memoryMiB,
        ...(inVpc ? { vpc: network.vpc, vpcSubnets: network.appSubnets, securityGroups: [network.lambdaSecurityGroup] } : {}),
        tracing: lambda.Tracing.ACTIVE,
        logGroup,
        loggingFormat: lambda.LoggingFormat.JSON,
        reservedConcurrentExecutions: s.reserved,
        environment: {
          NODE_OPTIONS: '--enable-source-maps',
          POWERTOOLS_SERVICE_NAME: 'filestore',
          POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        },
      });
      this.functions[name] = fn;
      if (s.poolSize !== undefined) {
        fn.addEnvironment('FILESTORE_DB_HOST', data.proxy.endpoint);
        fn.addEnvironment('FILESTORE_DB_PORT', String(DATABASE_PORT));
        fn.addEnvironment('FILESTORE_DB_NAME', DATABASE_NAME);
        fn.addEnvironment('FILESTORE_DB_USER', DATABASE_USER);
        fn.addEnvironment('FILESTORE_DB_IAM_AUTH', 'true');
        fn.addEnvironment('FILESTORE_DB_POOL_SIZE', String(s.poolSize));
        data.proxy.grantConnect(fn, DATABASE_USER);
      }
    }
    const f = this.functions;

    // The functions with a core (lambdas/support/core.ts): Redis and the reconcile queue.
    for (const fn of [f.api, f['s3-events'], f.audit, f.reconcile, f.maintenance]) {
      fn.addEnvironment('REDIS_URL', data.redisUrl);
      fn.addEnvironment('FILESTORE_REDIS_AUTH_SECRET_ARN', data.redisAuthSecret.secretArn);
      data.redisAuthSecret.grantRead(fn);
      fn.addEnvironment('FILESTORE_RECONCILE_QUEUE_URL', storage.reconcileQueue.queueUrl);
      storage.reconcileQueue.grantSendMessages(fn);
    }
    // The command secret only where commands are signed: the API's routes alone dispatch to
    // agents (lambdas/support/core.ts DISPATCHING_FUNCTIONS; the other cores refuse to dispatch).
    f.api.addEnvironment('FILESTORE_COMMAND_SECRET_ARN', secrets.commandSecret.secretArn);
    secrets.commandSecret.grantRead(f.api);
    f.authorizer.addEnvironment('FILESTORE_API_TOKENS_SECRET_ARN', secrets.apiTokens.secretArn);
    secrets.apiTokens.grantRead(f.authorizer);
    for (const fn of [f.api, f.migrate]) fn.addEnvironment('FILESTORE_S3_MOUNTS', s3MountsVariable(config));
    for (const fn of [f['s3-events'], f.audit, f.reconcile]) fn.addEnvironment('FILESTORE_S3_MISSING_GRACE_MS', String(config.s3MissingGraceMs));
    for (const fn of [f.audit, f.reconcile]) fn.addEnvironment('FILESTORE_MAX_MISSING_RATIO', String(config.maxMissingRatio));

    // S3 of the mounts' prefixes only.
    for (const fn of [f['s3-events'], f.audit, f.reconcile, f.api, f.maintenance]) grantMountsRead(fn, storage.mounts);
    for (const fn of [f.api, f.maintenance]) grantMountsWrite(fn, storage.mounts);

    // Event sources.
    f['s3-events'].addEventSource(new SqsEventSource(storage.s3EventQueue, { batchSize: S3_EVENTS_BATCH_SIZE, reportBatchItemFailures: true, maxConcurrency: 10 }));
    f.reconcile.addEventSource(new SqsEventSource(storage.reconcileQueue, { batchSize: RECONCILE_BATCH_SIZE, reportBatchItemFailures: true, maxConcurrency: config.reconcileMaxConcurrency }));
    // The reconcile function puts off a run by changing its message's visibility (the backoff).
    storage.reconcileQueue.grant(f.reconcile, 'sqs:ChangeMessageVisibility');

    // Scheduled functions: a failed run is not retried by Lambda (the next schedule runs again).
    for (const fn of [f.audit, f.maintenance]) fn.configureAsyncInvoke({ retryAttempts: 0, maxEventAge: Duration.minutes(5) });
  }
}

/** The EMF namespace of the Lambdas' metrics (shared/metrics/emf.ts default). */
export const METRICS_NAMESPACE = 'Filestore';

function pascal(name: string): string {
  return name.replace(/(^|-)([a-z])/g, (_, __, c: string) => c.toUpperCase());
}

/** `arn:…:s3:::bucket/prefix*` of each mount. */
function objectArns(mounts: MountedBucket[], under = ''): string[] {
  return mounts.map((m) => m.bucket.arnForObjects(`${m.mount.prefix}${under}*`));
}

/** GetObject (GET, HEAD) below each mount's prefix; ListBucket of each bucket limited to the prefixes when one is given. */
export function grantMountsRead(fn: lambda.Function, mounts: MountedBucket[]): void {
  if (mounts.length === 0) return;
  fn.addToRolePolicy(new iam.PolicyStatement({ sid: 'ReadMountedObjects', actions: ['s3:GetObject'], resources: objectArns(mounts) }));
  const byBucket = new Map<string, { arn: string; prefixes: string[] }>();
  for (const m of mounts) {
    const entry = byBucket.get(m.mount.bucket) ?? { arn: m.bucket.bucketArn, prefixes: [] };
    entry.prefixes.push(m.mount.prefix);
    byBucket.set(m.mount.bucket, entry);
  }
  let i = 0;
  for (const { arn, prefixes } of byBucket.values()) {
    const whole = prefixes.includes('');
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        sid: `ListMountedPrefixes${i++}`,
        actions: ['s3:ListBucket'],
        resources: [arn],
        // IfExists: a HEAD of a missing key is answered 404 only to a caller allowed to list the
        // bucket, and that check carries no s3:prefix; without IfExists it would be 403, which
        // the handlers cannot tell from a denial (a deleted object never becomes MISSING). A
        // listing with a prefix must stay below the mounts' prefixes.
        ...(whole ? {} : { conditions: { StringLikeIfExists: { 's3:prefix': prefixes.map((p) => `${p}*`) } } }),
      }),
    );
  }
}

/** PutObject (also a CopyObject's destination, with the tags it copies), DeleteObject and multipart clean-up below each mount's prefix. */
export function grantMountsWrite(fn: lambda.Function, mounts: MountedBucket[]): void {
  if (mounts.length === 0) return;
  fn.addToRolePolicy(
    new iam.PolicyStatement({
      sid: 'WriteMountedObjects',
      // Tagging: CopyObject copies a tagged source's tags (S3 then checks both).
      actions: ['s3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts', 's3:GetObjectTagging', 's3:PutObjectTagging'],
      resources: objectArns(mounts),
    }),
  );
  const buckets = [...new Map(mounts.map((m) => [m.mount.bucket, m.bucket.bucketArn])).values()];
  fn.addToRolePolicy(new iam.PolicyStatement({ sid: 'ListMountedUploads', actions: ['s3:ListBucketMultipartUploads'], resources: buckets }));
}
