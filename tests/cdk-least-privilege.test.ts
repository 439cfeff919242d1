/**
 * Least privilege of the CDK app (issue 15), on the example configuration's stack built once:
 * S3 read-only for the functions that judge storage, writes only where the code writes, no
 * database management, each secret's readers, SQS per function, the on-prem agents' policy.
 * Presence and absence both.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { LAMBDA_NAMES, type LambdaName } from '../cdk/bundles.ts';
import { actionsOf, buildExampleStack, logicalIdOf, resourcesOf, statementsOfRole, type BuiltStack } from './support/cdk-app.ts';

let b: BuiltStack;
const roleId = (name: LambdaName) => logicalIdOf(b.stack, b.stack.compute.functions[name].role as never);
const statements = (name: LambdaName) => statementsOfRole(b.json, roleId(name));
const allowedActions = (name: LambdaName) => statements(name).filter((s) => s.Effect === 'Allow').flatMap(actionsOf);
const arnOf = (c: { node: { defaultChild?: unknown } }) => ({ 'Fn::GetAtt': [logicalIdOf(b.stack, c), 'Arn'] });

beforeAll(() => {
  b = buildExampleStack();
}, 180_000);

describe('least privilege', () => {
  const s3Statements = (name: LambdaName) => statements(name).filter((s) => actionsOf(s).some((a) => a.startsWith('s3:')));
  const mountObjectArns = () =>
    b.stack.storage.mounts.map(({ mount, bucket }) =>
      mount.create
        ? { 'Fn::Join': ['', [{ 'Fn::GetAtt': [logicalIdOf(b.stack, bucket as never), 'Arn'] }, `/${mount.prefix}*`]] }
        : { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, `:s3:::${mount.bucket}/${mount.prefix}*`]] },
    );

  it('the S3-event, audit and reconcile functions only read: GetObject below the mounts\' prefixes, ListBucket limited to them', () => {
    for (const name of ['s3-events', 'audit', 'reconcile'] as const) {
      const s3 = s3Statements(name);
      expect(s3.flatMap(actionsOf).sort(), name).toEqual(['s3:GetObject', 's3:ListBucket', 's3:ListBucket']);
      const get = s3.find((s) => actionsOf(s).includes('s3:GetObject'))!;
      expect(resourcesOf(get)).toEqual(mountObjectArns());
      const archive = b.config.s3Mounts.find((m) => m.prefix !== '')!;
      const list = s3.find((s) => JSON.stringify(s.Resource).includes(`:s3:::${archive.bucket}`) && actionsOf(s).includes('s3:ListBucket'))!;
      // IfExists: HEAD of a missing key must answer 404, not 403 (S3 checks ListBucket without a prefix then).
      expect(list.Condition).toEqual({ StringLikeIfExists: { 's3:prefix': [`${archive.prefix}*`] } });
    }
  });

  it('only the api function (writes) and maintenance (journal recovery, staging sweep) may put or delete objects; no s3:* wildcard anywhere', () => {
    const writes = ['s3:PutObject', 's3:DeleteObject'];
    for (const name of LAMBDA_NAMES) {
      const actions = allowedActions(name);
      expect(actions.some((a) => a === 's3:*' || a === '*'), name).toBe(false);
      expect(writes.every((w) => actions.includes(w)), name).toBe(name === 'api' || name === 'maintenance');
      expect(actions.some((a) => writes.includes(a)), name).toBe(name === 'api' || name === 'maintenance');
    }
    for (const name of ['api', 'maintenance'] as const) {
      const write = s3Statements(name).find((s) => actionsOf(s).includes('s3:PutObject'))!;
      expect(resourcesOf(write)).toEqual(mountObjectArns());
    }
    expect(s3Statements('authorizer')).toEqual([]);
    expect(s3Statements('migrate')).toEqual([]);
  });

  it('each function writes only its own log group: no AWS managed policy on its role, no logs:* action on another resource', () => {
    for (const name of LAMBDA_NAMES) {
      const role = b.json.Resources[roleId(name)]!;
      expect(role.Properties?.ManagedPolicyArns, name).toBeUndefined();
      const logStatements = statements(name).filter((s) => actionsOf(s).some((a) => a.startsWith('logs:')));
      expect(logStatements, name).toHaveLength(1);
      expect(actionsOf(logStatements[0]!).sort(), name).toEqual(['logs:CreateLogStream', 'logs:PutLogEvents']);
      const logGroup = b.stack.compute.node.findChild(`${name.replace(/(^|-)([a-z])/g, (_, __, c: string) => c.toUpperCase())}Logs`);
      expect(resourcesOf(logStatements[0]!), name).toEqual([arnOf(logGroup as never)]);
    }
  });

  it('no function may manage the database: no rds:* action, only rds-db:connect as "filestore" on the proxy', () => {
    for (const name of LAMBDA_NAMES) {
      const actions = allowedActions(name);
      expect(actions.filter((a) => a.startsWith('rds:')), name).toEqual([]);
      const connect = statements(name).filter((s) => actionsOf(s).includes('rds-db:connect'));
      if (name === 'authorizer') {
        expect(connect).toEqual([]);
        continue;
      }
      expect(connect, name).toHaveLength(1);
      const arn = JSON.stringify(connect[0]!.Resource);
      expect(arn).toContain(`"Fn::GetAtt":["${logicalIdOf(b.stack, b.stack.data.proxy)}","DBProxyArn"]`);
      expect(arn).toMatch(/:dbuser:.*"\/filestore"/);
    }
  });

  it('each secret is readable only by the functions that need it; the database secret by none', () => {
    const readers = (secret: { node: { defaultChild?: unknown } }) =>
      LAMBDA_NAMES.filter((name) =>
        statements(name).some((s) => actionsOf(s).includes('secretsmanager:GetSecretValue') && JSON.stringify(s.Resource) === JSON.stringify({ Ref: logicalIdOf(b.stack, secret) })),
      ).sort();
    expect(readers(b.stack.secrets.apiTokens)).toEqual(['authorizer']);
    // Only the API dispatches (signs) commands to agents.
    expect(readers(b.stack.secrets.commandSecret)).toEqual(['api']);
    expect(readers(b.stack.data.redisAuthSecret)).toEqual(['api', 'audit', 'maintenance', 'reconcile', 's3-events']);
    expect(readers(b.stack.data.databaseSecret as never)).toEqual([]);
    for (const name of LAMBDA_NAMES) {
      for (const s of statements(name).filter((x) => actionsOf(x).some((a) => a.startsWith('secretsmanager:')))) {
        expect(actionsOf(s).sort()).toEqual(['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue']);
      }
    }
  });

  it('SQS: senders of the reconcile queue, consumers of their own queue only; "*" only for X-Ray and the VPC network interfaces', () => {
    const reconcileQueue = JSON.stringify(arnOf(b.stack.storage.reconcileQueue));
    for (const name of LAMBDA_NAMES) {
      const sends = statements(name).filter((s) => actionsOf(s).includes('sqs:SendMessage'));
      const expected = ['api', 's3-events', 'audit', 'reconcile', 'maintenance'].includes(name);
      expect(sends.map((s) => JSON.stringify(s.Resource)), name).toEqual(expected ? [reconcileQueue] : []);
      const receives = statements(name).filter((s) => actionsOf(s).includes('sqs:ReceiveMessage')).map((s) => JSON.stringify(s.Resource));
      expect(receives, name).toEqual(name === 's3-events' ? [JSON.stringify(arnOf(b.stack.storage.s3EventQueue))] : name === 'reconcile' ? [reconcileQueue] : []);
      const eni = ['ec2:CreateNetworkInterface', 'ec2:DescribeNetworkInterfaces', 'ec2:DescribeSubnets', 'ec2:DeleteNetworkInterface', 'ec2:AssignPrivateIpAddresses', 'ec2:UnassignPrivateIpAddresses'];
      for (const s of statements(name).filter((x) => resourcesOf(x).includes('*'))) expect(actionsOf(s).every((a) => a.startsWith('xray:') || eni.includes(a)), name).toBe(true);
    }
  });

  it('the on-prem agents\' policy: rds-db:connect on the proxy as the Lambdas have it, the Redis AUTH, command and API-token secrets; not the database secret, no S3', () => {
    const policy = b.json.Resources[logicalIdOf(b.stack, b.stack.agents.policy as never)]!.Properties!;
    const st = policy.PolicyDocument.Statement as Array<{ Action: string | string[]; Resource: unknown }>;
    expect(st.flatMap(actionsOf).sort()).toEqual(['rds-db:connect', 'secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue']);
    // The same dbuser ARN as DatabaseProxy.grantConnect gives the functions: the proxy's id, the user.
    const connect = st.find((s) => actionsOf(s).includes('rds-db:connect'))!;
    const lambdaConnect = statements('api').find((s) => actionsOf(s).includes('rds-db:connect'))!;
    expect(resourcesOf(connect)).toEqual(resourcesOf(lambdaConnect));
    expect(JSON.stringify(resourcesOf(connect))).toContain(':dbuser:');
    expect(JSON.stringify(resourcesOf(connect))).toContain('/filestore');
    const secrets = resourcesOf(st.find((s) => actionsOf(s).includes('secretsmanager:GetSecretValue'))!);
    const ref = (c: { node: { defaultChild?: unknown } }) => ({ Ref: logicalIdOf(b.stack, c) });
    expect(secrets).toEqual(expect.arrayContaining([ref(b.stack.data.redisAuthSecret), ref(b.stack.secrets.commandSecret), ref(b.stack.secrets.apiTokens)]));
    expect(secrets).toHaveLength(3);
    expect(JSON.stringify(secrets)).not.toContain(logicalIdOf(b.stack, b.stack.data.databaseSecret as never));
  });

  it('the on-prem CIDR reaches the proxy\'s port and Redis, never the database instance', () => {
    const inbound = (sg: { node: { defaultChild?: unknown } }) => (b.json.Resources[logicalIdOf(b.stack, sg)]!.Properties!.SecurityGroupIngress ?? []) as Array<Record<string, unknown>>;
    const ingressOf = (sg: { node: { defaultChild?: unknown } }) => [
      ...inbound(sg),
      ...Object.values(b.json.Resources)
        .filter((r) => r.Type === 'AWS::EC2::SecurityGroupIngress' && JSON.stringify(r.Properties!.GroupId).includes(logicalIdOf(b.stack, sg)))
        .map((r) => r.Properties as Record<string, unknown>),
    ];
    expect(ingressOf(b.stack.data.proxySecurityGroup)).toContainEqual(expect.objectContaining({ CidrIp: b.config.onPremCidr, FromPort: 5432, ToPort: 5432 }));
    expect(ingressOf(b.stack.data.redisSecurityGroup)).toContainEqual(expect.objectContaining({ CidrIp: b.config.onPremCidr, FromPort: 6379, ToPort: 6379 }));
    const database = ingressOf(b.stack.data.databaseSecurityGroup);
    expect(database.length).toBeGreaterThan(0); // the proxy's and the rotation function's
    expect(database.filter((r) => r.CidrIp !== undefined || r.CidrIpv6 !== undefined)).toEqual([]);
  });
});
