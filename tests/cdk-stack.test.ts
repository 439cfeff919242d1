/**
 * The CDK app's contracts (SPEC §11, issue 15), on the example configuration's stack built once:
 * S3 notifications → the S3-event queue → its function (ReportBatchItemFailures), DLQs and
 * visibility timeouts, the functions and their variables, schedules, alarms, the migration
 * trigger's ordering, data and network settings, the API, outputs, and cdk-nag AwsSolutions
 * with nothing unacknowledged. Least privilege: cdk-least-privilege.test.ts.
 */
import { Match } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { LAMBDA_NAMES, type LambdaName } from '../cdk/bundles.ts';
import { cadenceSeconds, s3MountsVariable } from '../cdk/config.ts';
import { FUNCTION_SETTINGS } from '../cdk/constructs/compute.ts';
import { auditAgeThreshold } from '../cdk/constructs/observability.ts';
import { ACKNOWLEDGED } from '../cdk/nag.ts';
import { actionsOf, buildExampleStack, dependsOn, logicalIdOf, statementsOfRole, type BuiltStack } from './support/cdk-app.ts';

let b: BuiltStack;
const fnId = (name: LambdaName) => logicalIdOf(b.stack, b.stack.compute.functions[name]);
const fnProps = (name: LambdaName) => b.json.Resources[fnId(name)]?.Properties as Record<string, any>;
const envOf = (name: LambdaName) => fnProps(name).Environment.Variables as Record<string, unknown>;
const arnOf = (c: { node: { defaultChild?: unknown } }) => ({ 'Fn::GetAtt': [logicalIdOf(b.stack, c), 'Arn'] });
const ofType = (type: string) => Object.entries(b.json.Resources).filter(([, r]) => r.Type === type);

beforeAll(() => {
  b = buildExampleStack();
}, 180_000);

describe('S3 notifications → SQS → the S3-event function', () => {
  it('each mount\'s bucket notifies the S3-event queue of created and removed objects under its prefix', () => {
    const queue = arnOf(b.stack.storage.s3EventQueue);
    const notifications = ofType('Custom::S3BucketNotifications').map(([, r]) => r.Properties as Record<string, any>);
    expect(notifications).toHaveLength(b.config.s3Mounts.length);
    for (const mount of b.config.s3Mounts) {
      const bucketName = mount.create ? { Ref: logicalIdOf(b.stack, b.stack.storage.mounts.find((m) => m.mount.key === mount.key)!.bucket as never) } : mount.bucket;
      const n = notifications.find((p) => JSON.stringify(p.BucketName) === JSON.stringify(bucketName));
      expect(n, mount.key).toBeDefined();
      // An imported bucket's other notifications are kept (not managed by the stack).
      expect(n!.Managed).toBe(mount.create);
      const configs = n!.NotificationConfiguration.QueueConfigurations as Array<Record<string, any>>;
      expect(configs.map((c) => c.Events).flat().sort()).toEqual(['s3:ObjectCreated:*', 's3:ObjectRemoved:*']);
      for (const c of configs) {
        expect(c.QueueArn).toEqual(queue);
        expect(c.Filter?.Key?.FilterRules ?? []).toEqual(mount.prefix ? [{ Name: 'prefix', Value: mount.prefix }] : []);
      }
    }
  });

  it('the S3-event queue feeds the S3-event function in batches of 10 with ReportBatchItemFailures', () => {
    b.template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: arnOf(b.stack.storage.s3EventQueue),
      FunctionName: { Ref: fnId('s3-events') },
      BatchSize: 10,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
  });

  it('the reconcile queue feeds the reconcile function one message at a time, with ReportBatchItemFailures and a bounded concurrency', () => {
    b.template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: arnOf(b.stack.storage.reconcileQueue),
      FunctionName: { Ref: fnId('reconcile') },
      BatchSize: 1,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      ScalingConfig: { MaximumConcurrency: b.config.reconcileMaxConcurrency },
    });
    expect(ofType('AWS::Lambda::EventSourceMapping')).toHaveLength(2);
  });
});

describe('queues: DLQs and visibility timeouts', () => {
  for (const [queueName, dlqName, fn] of [
    ['s3EventQueue', 's3EventDlq', 's3-events'],
    ['reconcileQueue', 'reconcileDlq', 'reconcile'],
  ] as const) {
    it(`${queueName}: visibility ≥ 6× the ${fn} function's timeout, DLQ after 5 receives, encrypted, SSL only`, () => {
      const q = b.json.Resources[logicalIdOf(b.stack, b.stack.storage[queueName])]!.Properties!;
      const timeout = fnProps(fn).Timeout as number;
      expect(timeout).toBe(FUNCTION_SETTINGS[fn].timeout.toSeconds());
      expect(q.VisibilityTimeout).toBeGreaterThanOrEqual(6 * timeout);
      expect(q.RedrivePolicy).toEqual({ deadLetterTargetArn: arnOf(b.stack.storage[dlqName]), maxReceiveCount: 5 });
      expect(q.SqsManagedSseEnabled).toBe(true);
      const dlq = b.json.Resources[logicalIdOf(b.stack, b.stack.storage[dlqName])]!.Properties!;
      expect(dlq.SqsManagedSseEnabled).toBe(true);
    });
  }

  it('every queue denies requests without TLS', () => {
    const queues = ofType('AWS::SQS::Queue').map(([id]) => id);
    expect(queues).toHaveLength(5);
    for (const id of queues) {
      b.template.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: Match.arrayWith([{ Ref: id }]),
        PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]) },
      });
    }
  });
});

describe('compute: one function per Lambda entry', () => {
  it('nodejs24.x on ARM64, in the VPC but the authorizer (it reads only its secret), traced, each handler its bundle\'s', () => {
    for (const name of LAMBDA_NAMES) {
      const p = fnProps(name);
      expect(p.Runtime, name).toBe('nodejs24.x');
      expect(p.Architectures).toEqual(['arm64']);
      expect(p.Handler).toBe(`${name}.handler`);
      expect(p.TracingConfig).toEqual({ Mode: 'Active' });
      if (name === 'authorizer') expect(p.VpcConfig, name).toBeUndefined();
      else expect(p.VpcConfig.SubnetIds.length, name).toBe(b.config.availabilityZones.length);
      expect(p.LoggingConfig.LogGroup).toBeDefined();
    }
  });

  it('the single runner: maintenance has reserved concurrency 1; the others none (migrate serializes on its advisory lock)', () => {
    expect(fnProps('maintenance').ReservedConcurrentExecutions).toBe(1);
    for (const name of ['api', 'authorizer', 's3-events', 'audit', 'reconcile', 'migrate'] as const) expect(fnProps(name).ReservedConcurrentExecutions, name).toBeUndefined();
  });

  it('the database through the proxy with IAM auth, pools of 1 (api, migrate) or 2 (s3-events, audit, reconcile, maintenance)', () => {
    const proxyEndpoint = { 'Fn::GetAtt': [logicalIdOf(b.stack, b.stack.data.proxy), 'Endpoint'] };
    const pools: Partial<Record<LambdaName, string>> = { api: '1', migrate: '1', 's3-events': '2', audit: '2', reconcile: '2', maintenance: '2' };
    for (const [name, pool] of Object.entries(pools) as Array<[LambdaName, string]>) {
      expect(envOf(name), name).toMatchObject({ FILESTORE_DB_HOST: proxyEndpoint, FILESTORE_DB_PORT: '5432', FILESTORE_DB_NAME: 'filestore', FILESTORE_DB_USER: 'filestore', FILESTORE_DB_IAM_AUTH: 'true', FILESTORE_DB_POOL_SIZE: pool });
      expect(envOf(name).DATABASE_URL).toBeUndefined();
    }
    expect(envOf('authorizer').FILESTORE_DB_HOST).toBeUndefined();
  });

  it('Redis over TLS with the AUTH secret and the reconcile queue for every function with a core; the command secret for the API alone', () => {
    for (const name of ['api', 's3-events', 'audit', 'reconcile', 'maintenance'] as const) {
      const env = envOf(name);
      expect(JSON.stringify(env.REDIS_URL), name).toMatch(/^\{"Fn::Join":\["",\["rediss:\/\//);
      expect(env.FILESTORE_REDIS_AUTH_SECRET_ARN).toEqual({ Ref: logicalIdOf(b.stack, b.stack.data.redisAuthSecret) });
      if (name === 'api') expect(env.FILESTORE_COMMAND_SECRET_ARN).toEqual({ Ref: logicalIdOf(b.stack, b.stack.secrets.commandSecret) });
      else expect(env.FILESTORE_COMMAND_SECRET_ARN, name).toBeUndefined();
      expect(env.FILESTORE_RECONCILE_QUEUE_URL).toEqual({ Ref: logicalIdOf(b.stack, b.stack.storage.reconcileQueue) });
    }
    for (const name of ['authorizer', 'migrate'] as const) {
      expect(envOf(name).REDIS_URL).toBeUndefined();
      expect(envOf(name).FILESTORE_COMMAND_SECRET_ARN).toBeUndefined();
    }
    expect(envOf('authorizer').FILESTORE_API_TOKENS_SECRET_ARN).toEqual({ Ref: logicalIdOf(b.stack, b.stack.secrets.apiTokens) });
  });

  it('FILESTORE_S3_MOUNTS (the configured S3 mounts) on the api and migrate functions only', () => {
    const expected = b.config.s3Mounts.map((m) => ({ key: m.key, bucket: m.bucket, prefix: m.prefix }));
    expect(JSON.parse(s3MountsVariable(b.config))).toEqual(expected);
    expect(JSON.parse(envOf('api').FILESTORE_S3_MOUNTS as string)).toEqual(expected);
    expect(JSON.parse(envOf('migrate').FILESTORE_S3_MOUNTS as string)).toEqual(expected);
    for (const name of ['authorizer', 's3-events', 'audit', 'reconcile', 'maintenance'] as const) expect(envOf(name).FILESTORE_S3_MOUNTS, name).toBeUndefined();
  });

  it('the EMF namespace and service the audit-age alarm reads', () => {
    for (const name of LAMBDA_NAMES) expect(envOf(name)).toMatchObject({ POWERTOOLS_METRICS_NAMESPACE: 'Filestore', POWERTOOLS_SERVICE_NAME: 'filestore' });
  });
});

describe('schedules', () => {
  it('maintenance every minute, one audit per S3 mount at its cadence with {"mountId": key}; retries capped; failures to the DLQ', () => {
    const schedules = ofType('AWS::Scheduler::Schedule').map(([, r]) => r.Properties as Record<string, any>);
    expect(schedules).toHaveLength(1 + b.config.s3Mounts.length);
    const dlq = arnOf(b.stack.schedules.dlq);
    const maintenance = schedules.filter((s) => JSON.stringify(s.Target.Arn) === JSON.stringify({ 'Fn::GetAtt': [fnId('maintenance'), 'Arn'] }));
    expect(maintenance).toHaveLength(1);
    expect(maintenance[0]!.ScheduleExpression).toBe('rate(1 minute)');
    for (const mount of b.config.s3Mounts) {
      const audit = schedules.filter((s) => s.Target.Input === JSON.stringify({ mountId: mount.key }));
      expect(audit, mount.key).toHaveLength(1);
      expect(audit[0]!.Target.Arn).toEqual({ 'Fn::GetAtt': [fnId('audit'), 'Arn'] });
      expect(cadenceSeconds(audit[0]!.ScheduleExpression)).toBe(cadenceSeconds(mount.auditCadence));
    }
    for (const s of schedules) {
      expect(s.Target.RetryPolicy.MaximumRetryAttempts).toBeLessThanOrEqual(2);
      expect(s.Target.RetryPolicy.MaximumEventAgeInSeconds).toBeLessThanOrEqual(900);
      expect(s.Target.DeadLetterConfig).toEqual({ Arn: dlq });
    }
  });

  it('each schedule role may invoke its own function only (and send to the schedules\' DLQ)', () => {
    for (const [role, name] of [
      [b.stack.schedules.maintenanceRole, 'maintenance'],
      [b.stack.schedules.auditRole, 'audit'],
    ] as const) {
      const st = statementsOfRole(b.json, logicalIdOf(b.stack, role as never));
      expect(st.flatMap(actionsOf).sort()).toEqual(['lambda:InvokeFunction', 'sqs:SendMessage']);
      const invoke = JSON.stringify(st.find((s) => actionsOf(s).includes('lambda:InvokeFunction'))!.Resource);
      expect(invoke).toContain(fnId(name));
      for (const other of LAMBDA_NAMES.filter((n) => n !== name)) expect(invoke).not.toContain(fnId(other));
    }
  });

  it('a failed scheduled run is not retried by Lambda itself (the next schedule runs)', () => {
    for (const name of ['audit', 'maintenance'] as const) {
      b.template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', { FunctionName: { Ref: fnId(name) }, MaximumRetryAttempts: 0 });
    }
  });
});

describe('alarms and dashboard', () => {
  const alarms = () => ofType('AWS::CloudWatch::Alarm').map(([, r]) => r.Properties as Record<string, any>);
  const topic = () => ({ Ref: logicalIdOf(b.stack, b.stack.observability.topic) });
  const find = (p: (a: Record<string, any>) => boolean) => alarms().filter(p);

  it('DLQ depth of each DLQ', () => {
    for (const dlq of [b.stack.storage.s3EventDlq, b.stack.storage.reconcileDlq, b.stack.schedules.dlq]) {
      const a = find((x) => x.MetricName === 'ApproximateNumberOfMessagesVisible' && JSON.stringify(x.Dimensions).includes(logicalIdOf(b.stack, dlq)));
      expect(a).toHaveLength(1);
      expect(a[0]!.Threshold).toBe(0);
      expect(a[0]!.ComparisonOperator).toBe('GreaterThanThreshold');
    }
  });

  it('oldest message age of the S3-event and reconcile queues', () => {
    for (const q of [b.stack.storage.s3EventQueue, b.stack.storage.reconcileQueue]) {
      expect(find((x) => x.MetricName === 'ApproximateAgeOfOldestMessage' && JSON.stringify(x.Dimensions).includes(logicalIdOf(b.stack, q)))).toHaveLength(1);
    }
  });

  it('errors and throttles of every function, and the API\'s 5xx', () => {
    for (const name of LAMBDA_NAMES) {
      for (const metric of ['Errors', 'Throttles']) {
        expect(find((x) => x.MetricName === metric && x.Namespace === 'AWS/Lambda' && JSON.stringify(x.Dimensions) === JSON.stringify([{ Name: 'FunctionName', Value: { Ref: fnId(name) } }])), `${name} ${metric}`).toHaveLength(1);
      }
    }
    expect(find((x) => x.MetricName === '5xx' && x.Namespace === 'AWS/ApiGateway')).toHaveLength(1);
  });

  it('per S3 mount: filestore_audit_age_seconds{mount} above twice the cadence plus a margin, missing data breaching', () => {
    for (const mount of b.config.s3Mounts) {
      const a = find((x) => x.MetricName === 'filestore_audit_age_seconds' && JSON.stringify(x.Dimensions).includes(`"Value":"${mount.key}"`));
      expect(a, mount.key).toHaveLength(1);
      expect(a[0]).toMatchObject({ Namespace: 'Filestore', Statistic: 'Maximum', TreatMissingData: 'breaching', Threshold: auditAgeThreshold(mount.auditCadence) });
      expect(a[0]!.Threshold).toBeGreaterThan(2 * cadenceSeconds(mount.auditCadence));
      expect(a[0]!.Dimensions).toEqual(expect.arrayContaining([{ Name: 'mount', Value: mount.key }, { Name: 'service', Value: 'filestore' }]));
      expect(a[0]!.Period).toBeGreaterThanOrEqual(cadenceSeconds(mount.auditCadence));
    }
  });

  it('every alarm notifies the SNS topic (KMS-encrypted, the configured e-mail subscribed); a dashboard', () => {
    const all = alarms();
    expect(all).toHaveLength(3 + 2 + 2 * LAMBDA_NAMES.length + 1 + b.config.s3Mounts.length);
    for (const a of all) expect(a.AlarmActions).toEqual([topic()]);
    b.template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    b.template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: b.config.alarmEmail, TopicArn: topic() });
    b.template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });

  it('the topic policy lets this account’s CloudWatch alarms publish, beside the Deny of plain HTTP', () => {
    const policies = ofType('AWS::SNS::TopicPolicy');
    expect(policies).toHaveLength(1);
    const props = policies[0]![1].Properties as { Topics: unknown[]; PolicyDocument: { Statement: Array<Record<string, unknown>> } };
    expect(props.Topics).toEqual([topic()]);
    const statements = props.PolicyDocument.Statement;
    expect(statements).toContainEqual(expect.objectContaining({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }));
    const allow = statements.filter((st) => st.Effect === 'Allow');
    expect(allow).toHaveLength(1);
    expect(allow[0]).toMatchObject({ Principal: { Service: 'cloudwatch.amazonaws.com' }, Action: 'sns:Publish', Resource: topic() });
    const condition = JSON.stringify(allow[0]!.Condition);
    expect(condition).toContain('"aws:SourceAccount":{"Ref":"AWS::AccountId"}');
    expect(condition).toMatch(/"aws:SourceArn":\{"Fn::Join":.*:alarm:\*/);
  });
});

describe('migrations run after the database and before the handlers', () => {
  it('the trigger invokes the migrate function, after the instance and the proxy, again when its code changes', () => {
    const triggers = ofType('Custom::Trigger');
    expect(triggers).toHaveLength(1);
    const [, trigger] = triggers[0]!;
    expect(JSON.stringify(trigger.Properties!.HandlerArn)).toContain('ComputeMigrateCurrentVersion');
    expect(trigger.Properties!.ExecuteOnHandlerChange).toBe(true);
    expect(trigger.Properties!.InvocationType).toBe('RequestResponse');
    const deps = dependsOn(trigger);
    expect(deps).toContain(logicalIdOf(b.stack, b.stack.data.database));
    expect(deps).toContain(logicalIdOf(b.stack, b.stack.data.proxy));
  });

  it('every handler, event source mapping, the API and the schedules depend on the trigger', () => {
    const triggerId = ofType('Custom::Trigger')[0]![0];
    for (const name of LAMBDA_NAMES.filter((n) => n !== 'migrate')) expect(dependsOn(b.json.Resources[fnId(name)]!), name).toContain(triggerId);
    expect(dependsOn(b.json.Resources[fnId('migrate')]!)).not.toContain(triggerId);
    for (const type of ['AWS::Lambda::EventSourceMapping', 'AWS::ApiGatewayV2::Api', 'AWS::ApiGatewayV2::Route', 'AWS::ApiGatewayV2::Stage', 'AWS::Scheduler::Schedule']) {
      const list = ofType(type);
      expect(list.length, type).toBeGreaterThan(0);
      for (const [id, r] of list) expect(dependsOn(r), `${type} ${id}`).toContain(triggerId);
    }
  });
});

describe('data and network', () => {
  it('PostgreSQL: Multi-AZ, encrypted, deletion protection, TLS forced, rotated credentials; the proxy requires IAM auth and TLS', () => {
    b.template.hasResourceProperties('AWS::RDS::DBInstance', { Engine: 'postgres', MultiAZ: true, StorageEncrypted: true, DeletionProtection: true, PubliclyAccessible: false, EngineVersion: Match.stringLikeRegexp('^1[5-9]') });
    b.template.hasResourceProperties('AWS::RDS::DBParameterGroup', { Parameters: { 'rds.force_ssl': '1' } });
    b.template.hasResourceProperties('AWS::SecretsManager::RotationSchedule', { RotationRules: { ScheduleExpression: `rate(${b.config.database.rotationDays} days)` } });
    b.template.hasResourceProperties('AWS::RDS::DBProxy', { EngineFamily: 'POSTGRESQL', RequireTLS: true, Auth: [Match.objectLike({ AuthScheme: 'SECRETS', IAMAuth: 'REQUIRED' })] });
  });

  it('Redis: a Valkey replication group, cluster mode off, Multi-AZ, TLS + AUTH from the secret, noeviction', () => {
    b.template.hasResourceProperties('AWS::ElastiCache::ParameterGroup', { Properties: { 'maxmemory-policy': 'noeviction' } });
    const rg = ofType('AWS::ElastiCache::ReplicationGroup');
    expect(rg).toHaveLength(1);
    const p = rg[0]![1].Properties!;
    // The replication group uses the noeviction group (not the engine's default, volatile-lru).
    const [pgId] = ofType('AWS::ElastiCache::ParameterGroup').find(([, r]) => r.Properties!.Properties?.['maxmemory-policy'] === 'noeviction')!;
    expect(p.CacheParameterGroupName).toEqual({ Ref: pgId });
    expect(p).toMatchObject({ Engine: 'valkey', ClusterMode: 'disabled', MultiAZEnabled: true, AutomaticFailoverEnabled: true, TransitEncryptionEnabled: true, AtRestEncryptionEnabled: true, NumCacheClusters: b.config.redis.nodes });
    expect(p.NumNodeGroups).toBeUndefined();
    expect(JSON.stringify(p.AuthToken)).toContain('{{resolve:secretsmanager:');
    expect(JSON.stringify(p.AuthToken)).toContain(logicalIdOf(b.stack, b.stack.data.redisAuthSecret));
  });

  it('the VPC: the configured AZs (no lookups), no internet gateway or NAT, an S3 gateway and interface endpoints', () => {
    const azs = ofType('AWS::EC2::Subnet').map(([, r]) => r.Properties!.AvailabilityZone as string);
    expect([...new Set(azs)].sort()).toEqual([...b.config.availabilityZones].sort());
    b.template.resourceCountIs('AWS::EC2::InternetGateway', 0);
    b.template.resourceCountIs('AWS::EC2::NatGateway', 0);
    b.template.hasResourceProperties('AWS::EC2::VPCEndpoint', { VpcEndpointType: 'Gateway', ServiceName: Match.objectLike({ 'Fn::Join': Match.arrayWith([Match.arrayWith(['.s3'])]) }) });
    const interfaces = ofType('AWS::EC2::VPCEndpoint').filter(([, r]) => r.Properties!.VpcEndpointType === 'Interface').map(([, r]) => JSON.stringify(r.Properties!.ServiceName));
    for (const service of ['secretsmanager', 'sqs']) expect(interfaces.some((s) => s.includes(service)), service).toBe(true);
  });

  it('created buckets: encrypted, SSL only, no public access, access-logged', () => {
    for (const { mount, bucket } of b.stack.storage.mounts.filter((m) => m.mount.create)) {
      const p = b.json.Resources[logicalIdOf(b.stack, bucket as never)]!.Properties!;
      expect(p.BucketName).toBe(mount.bucket);
      expect(p.PublicAccessBlockConfiguration).toEqual({ BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true });
      expect(p.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm).toBe('AES256');
      expect(p.LoggingConfiguration).toBeDefined();
      expect(p.VersioningConfiguration?.Status === 'Enabled').toBe(mount.versioned);
    }
    // An imported bucket is not a resource of the stack.
    const imported = b.config.s3Mounts.filter((m) => !m.create).map((m) => m.bucket);
    for (const [, r] of ofType('AWS::S3::Bucket')) expect(imported).not.toContain(r.Properties!.BucketName);
  });
});

describe('API', () => {
  it('an HTTP API: every route to the API function (payload 2.0) behind the Lambda authorizer (simple responses, Authorization alone)', () => {
    b.template.hasResourceProperties('AWS::ApiGatewayV2::Api', { ProtocolType: 'HTTP' });
    b.template.hasResourceProperties('AWS::ApiGatewayV2::Authorizer', {
      AuthorizerType: 'REQUEST',
      AuthorizerPayloadFormatVersion: '2.0',
      EnableSimpleResponses: true,
      IdentitySource: ['$request.header.Authorization'],
    });
    b.template.hasResourceProperties('AWS::ApiGatewayV2::Integration', { IntegrationType: 'AWS_PROXY', PayloadFormatVersion: '2.0' });
    for (const [, r] of ofType('AWS::ApiGatewayV2::Route')) expect(r.Properties!.AuthorizationType).toBe('CUSTOM');
  });

  it('the default stage: access logs to a log group, throttled', () => {
    b.template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      AccessLogSettings: { DestinationArn: arnOf(b.stack.api.accessLogs), Format: Match.stringLikeRegexp('requestId') },
      DefaultRouteSettings: { ThrottlingRateLimit: b.config.api.throttleRateLimit, ThrottlingBurstLimit: b.config.api.throttleBurstLimit },
    });
  });
});

describe('outputs: what a deploy and an agent need', () => {
  it('each output named and described', () => {
    const names = ['ApiUrl', 'DatabaseProxyEndpoint', 'DatabasePort', 'DatabaseName', 'DatabaseUser', 'Region', 'DatabaseSecretArn', 'RedisEndpoint', 'RedisPort', 'RedisAuthSecretArn', 'CommandSecretArn', 'ApiTokensSecretArn', 'S3EventQueueUrl', 'S3EventDlqUrl', 'ReconcileQueueUrl', 'ReconcileDlqUrl', 'ScheduleDlqUrl', 'AgentPolicyArn', 'AlarmTopicArn', 'DashboardName', 'VpcId', 'S3Mounts'];
    expect(Object.keys(b.json.Outputs).sort()).toEqual([...names].sort());
    for (const name of names) expect(b.json.Outputs[name]!.Description?.length, name).toBeGreaterThan(10);
  });

  it('an agent\'s database variables are the Lambdas\' own: the proxy endpoint, port, database and user (IAM auth), and the region', () => {
    const env = b.json.Resources[logicalIdOf(b.stack, b.stack.compute.functions.api)]!.Properties!.Environment.Variables;
    const value = (name: string) => b.json.Outputs[name]!.Value;
    expect(env.FILESTORE_DB_IAM_AUTH).toBe('true');
    expect(value('DatabaseProxyEndpoint')).toEqual(env.FILESTORE_DB_HOST);
    expect(value('DatabasePort')).toBe(env.FILESTORE_DB_PORT);
    expect(value('DatabaseName')).toBe(env.FILESTORE_DB_NAME);
    expect(value('DatabaseUser')).toBe(env.FILESTORE_DB_USER);
    expect(value('Region')).toEqual(b.stack.resolve(b.stack.region)); // the configured region, or AWS::Region
    expect(b.json.Outputs.DatabaseProxyEndpoint!.Description).toMatch(/only inside the VPC/);
  });
});

describe('cdk-nag AwsSolutions (v3)', () => {
  it('reports nothing unacknowledged', () => {
    const report = b.nag.validateScope(b.app);
    expect(report.violations.map((v) => `${v.ruleName}: ${v.violatingResources.map((r) => r.constructPath).join(', ')}`)).toEqual([]);
    expect(report.success).toBe(true);
  });

  it('every acknowledgement names an AwsSolutions rule and a reason about this stack: what it acknowledges is named in it', () => {
    const acks = ACKNOWLEDGED.get(b.stack)!;
    expect(acks.length).toBeGreaterThan(0);
    // The stack's own things a reason can be about: its functions, its mounts, its resources.
    const ownWords = [...LAMBDA_NAMES, ...b.config.s3Mounts.map((m) => m.key), 'PostgreSQL', 'Redis', 'API token', 'command secret', 'EventBridge Scheduler', 'log-retention', 'S3 notification'];
    const pascal = (n: string) => n.replace(/(^|-)([a-z])/g, (_, __, c: string) => c.toUpperCase());
    for (const a of acks) {
      expect(a.id).toMatch(/^AwsSolutions-[A-Z]+\d+(\[.+\])?$/);
      expect(ownWords.some((w) => a.reason.includes(w)), `${a.id} on ${a.path}: "${a.reason}" names nothing of this stack`).toBe(true);
      // An acknowledgement on a function or its role names that function.
      for (const name of LAMBDA_NAMES) {
        if (a.path.includes(`/Compute/${pascal(name)}`)) expect(a.reason, `${a.id} on ${a.path}`).toContain(name);
      }
      // An object ARN below a mount's prefix is acknowledged naming that mount.
      if (/^AwsSolutions-IAM5\[Resource::.*(:s3:::|Bucket).*\*\]$/.test(a.id)) {
        expect(b.config.s3Mounts.some((m) => a.reason.includes(`S3 mount ${m.key}:`) && a.id.endsWith(`/${m.prefix}*]`)), `${a.id}: "${a.reason}"`).toBe(true);
      }
    }
    // No reason serves two different rules.
    const rulesByReason = new Map<string, Set<string>>();
    for (const a of acks) rulesByReason.set(a.reason, (rulesByReason.get(a.reason) ?? new Set()).add(a.id.replace(/\[.*$/, '')));
    for (const [reason, rules] of rulesByReason) expect([...rules], reason).toHaveLength(1);
    // Recorded on the constructs, where cdk-nag reads them.
    const recorded = b.stack.data.database.node.metadata.filter((m) => m.type === 'aws:cdk:acknowledged-rules');
    expect(recorded.length).toBeGreaterThan(0);
  });
});
