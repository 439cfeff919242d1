/**
 * The CDK app on configurations other than the example: a deployment without S3 mounts, alarm
 * e-mail or on-prem network (nothing S3 granted, nothing opened, nag still clean), and one
 * bucket mounted whole and under nested prefixes (one notification for the outer mount,
 * ListBucket unconditioned for the whole bucket).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { LAMBDA_NAMES } from '../cdk/bundles.ts';
import { bundleLambdaAssets, type LambdaBundles } from '../cdk/bundles.ts';
import { loadConfig, parseConfig } from '../cdk/config.ts';
import { buildApp, DEFAULT_CONFIG } from '../cdk/app.ts';
import { ACKNOWLEDGED } from '../cdk/nag.ts';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { App } from 'aws-cdk-lib';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Template } from 'aws-cdk-lib/assertions';
import { actionsOf, logicalIdOf, statementsOfRole, type CfnTemplate } from './support/cdk-app.ts';

const AZS = ['us-east-2a', 'us-east-2b', 'us-east-2c'];
let bundles: LambdaBundles;

function build(raw: unknown) {
  const config = parseConfig(raw);
  const { app, stack, nag } = buildApp({ app: new App(), config, bundles });
  const json = Template.fromStack(stack).toJSON() as CfnTemplate;
  const statements = (name: (typeof LAMBDA_NAMES)[number]) => statementsOfRole(json, logicalIdOf(stack, stack.compute.functions[name].role as never));
  return { app, stack, nag, json, statements, ofType: (t: string) => Object.values(json.Resources).filter((r) => r.Type === t) };
}

beforeAll(() => {
  bundles = bundleLambdaAssets();
}, 120_000);

describe('no S3 mounts, no alarm e-mail, no on-prem network', () => {
  let b: ReturnType<typeof build>;
  beforeAll(() => {
    b = build({ availabilityZones: AZS, stackName: 'Bare' });
  }, 120_000);

  it('synthesizes env-agnostic with nothing unacknowledged', () => {
    expect(b.stack.region).toMatch(/^\$\{Token/);
    expect(b.nag.validateScope(b.app).violations).toEqual([]);
  });

  it('grants no S3, creates no bucket or audit schedule, opens nothing to on-prem, subscribes nobody', () => {
    for (const name of LAMBDA_NAMES) expect(b.statements(name).flatMap(actionsOf).filter((a) => a.startsWith('s3:')), name).toEqual([]);
    expect(b.ofType('AWS::S3::Bucket')).toEqual([]);
    expect(b.ofType('Custom::S3BucketNotifications')).toEqual([]);
    expect(b.ofType('AWS::Scheduler::Schedule')).toHaveLength(1);
    const ingress = b.ofType('AWS::EC2::SecurityGroup').flatMap((r) => (r.Properties!.SecurityGroupIngress ?? []) as Array<{ CidrIp?: string }>);
    // Only the interface endpoints admit a CIDR: the VPC's own.
    expect(ingress.filter((r) => r.CidrIp !== undefined).map((r) => r.CidrIp)).toEqual(['10.40.0.0/16']);
    expect(b.ofType('AWS::SNS::Subscription')).toEqual([]);
    const azs = new Set(b.ofType('AWS::EC2::Subnet').map((r) => r.Properties!.AvailabilityZone));
    expect([...azs].sort()).toEqual(AZS);
    const env = b.json.Resources[logicalIdOf(b.stack, b.stack.compute.functions.api)]!.Properties!.Environment.Variables;
    expect(env.FILESTORE_S3_MOUNTS).toBe('[]');
  });
});

describe('the migration trigger runs again when there is something new to apply', () => {
  const handlerArn = (o: { config: unknown; migrate?: string }) => {
    const { stack } = buildApp({ app: new App(), config: parseConfig(o.config), bundles: { dirs: { ...bundles.dirs, migrate: o.migrate ?? bundles.dirs.migrate } } });
    const json = Template.fromStack(stack).toJSON() as CfnTemplate;
    const triggers = Object.values(json.Resources).filter((r) => r.Type === 'Custom::Trigger');
    expect(triggers).toHaveLength(1);
    return JSON.stringify(triggers[0]!.Properties!.HandlerArn);
  };
  const base = { availabilityZones: AZS, stackName: 'Probe' };

  it('a migration added to the migrate bundle, or a changed s3Mounts, changes the trigger’s HandlerArn (a new version: CloudFormation updates the trigger, which invokes it)', () => {
    const before = handlerArn({ config: base });
    expect(handlerArn({ config: base })).toBe(before);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'filestore-migrate-probe-'));
    try {
      cpSync(bundles.dirs.migrate, dir, { recursive: true });
      // The same content elsewhere is the same asset (the hash is of the content, not the path).
      expect(handlerArn({ config: base, migrate: dir })).toBe(before);
      writeFileSync(path.join(dir, 'migrations', '9999999999999_probe.sql'), 'SELECT 1;\n');
      expect(handlerArn({ config: base, migrate: dir })).not.toBe(before);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const withMount = { ...base, s3Mounts: [{ key: 'probe', bucket: 'filestore-probe-bucket', create: true }] };
    expect(handlerArn({ config: withMount })).not.toBe(before);
  }, 120_000);
});

describe('cdk-nag is part of synthesis', () => {
  it('an unacknowledged finding fails app.synth() (as it fails `cdk synth`), naming the rule', () => {
    const b = buildApp({ app: new App(), config: parseConfig({ availabilityZones: AZS, stackName: 'Probe' }), bundles });
    new sqs.Queue(b.stack, 'Unchecked');
    expect(() => b.app.synth()).toThrow(/AwsSolutions-SQS4/);
    const report = b.nag.validateScope(b.app);
    expect(report.violations.map((v) => v.ruleName).sort()).toEqual(['AwsSolutions-SQS3', 'AwsSolutions-SQS4']);
    expect(report.violations.flatMap((v) => v.violatingResources.map((r) => r.constructPath))).toEqual(['Probe/Unchecked/Resource', 'Probe/Unchecked/Resource']);
  }, 120_000);
});

describe('acknowledgements', () => {
  it('each acknowledgement of the example stack answers a finding cdk-nag makes without it, on that construct or below', () => {
    const config = loadConfig(DEFAULT_CONFIG);
    const bare = buildApp({ app: new App(), config, bundles, skipAcknowledgements: true });
    const findings = bare.nag.validateScope(bare.app).violations.flatMap((v) => v.violatingResources.map((r) => ({ id: v.ruleName, path: r.constructPath ?? '' })));
    const acked = buildApp({ app: new App(), config, bundles });
    expect(acked.nag.validateScope(acked.app).violations).toEqual([]);
    const acks = ACKNOWLEDGED.get(acked.stack)!;
    for (const a of acks) {
      expect(findings.some((f) => f.id === a.id && (f.path === a.path || f.path.startsWith(`${a.path}/`))), `${a.id} on ${a.path}`).toBe(true);
    }
    // And every finding is answered by one of them.
    for (const f of findings) expect(acks.some((a) => f.id === a.id && (f.path === a.path || f.path.startsWith(`${a.path}/`))), `${f.id} on ${f.path}`).toBe(true);
  }, 120_000);
});

describe('one bucket mounted whole and under nested prefixes', () => {
  let b: ReturnType<typeof build>;
  beforeAll(() => {
    b = build({
      availabilityZones: AZS,
      stackName: 'Nested',
      s3Mounts: [
        { key: 'all', bucket: 'shared-bucket', create: false, auditCadence: 'rate(1 day)' },
        { key: 'tenant', bucket: 'shared-bucket', prefix: 'tenant/', create: false, auditCadence: 30 },
      ],
    });
  }, 120_000);

  it('one notification of the whole bucket (S3 refuses overlapping ones), both mounts audited', () => {
    const [n, ...rest] = b.ofType('Custom::S3BucketNotifications');
    expect(rest).toEqual([]);
    const configs = n!.Properties!.NotificationConfiguration.QueueConfigurations as Array<{ Filter?: unknown }>;
    expect(configs).toHaveLength(2);
    for (const c of configs) expect(c.Filter).toBeUndefined();
    const inputs = b.ofType('AWS::Scheduler::Schedule').map((s) => s.Properties!.Target.Input).filter(Boolean).sort();
    expect(inputs).toEqual(['{"mountId":"all"}', '{"mountId":"tenant"}']);
    expect(b.nag.validateScope(b.app).violations).toEqual([]);
  });

  it('ListBucket of the whole bucket without a prefix condition (a mount covers it all)', () => {
    const list = b.statements('audit').filter((s) => actionsOf(s).includes('s3:ListBucket'));
    expect(list).toHaveLength(1);
    expect(list[0]!.Condition).toBeUndefined();
  });
});
