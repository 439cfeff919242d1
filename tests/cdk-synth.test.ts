/**
 * The real CDK CLI, offline: `npx cdk synth --no-notices --quiet` with no AWS credentials, no
 * metadata service, no Docker (CDK_DOCKER points at a command that fails) and telemetry off,
 * exits 0 and writes the template. The assets it stages are byte for byte the bundles
 * `npm run build` writes (cli/bundle.ts bundleLambdas, what the handler tests load), each
 * function's asset holding only its bundle (and migrate's migrations). And the configuration's
 * validation errors.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleLambdas } from '../cli/bundle.ts';
import { bundleFiles, LAMBDA_NAMES } from '../cdk/bundles.ts';
import { cadenceSeconds, parseConfig } from '../cdk/config.ts';
import { notificationPrefixes } from '../cdk/constructs/storage.ts';
import type { CfnTemplate } from './support/cdk-app.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');

let out: string;
let built: string;
let synth: { code: number; stdout: string; stderr: string; ms: number };

function offlineEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('AWS_') && !k.startsWith('CDK_')) env[k] = v;
  // No credentials, no metadata service, no Docker, no telemetry or version check; anything that
  // still tried the network would meet a proxy that is not there.
  return {
    ...env,
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: '/dev/null',
    AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
    CDK_DISABLE_CLI_TELEMETRY: 'true',
    CDK_DISABLE_VERSION_CHECK: 'true',
    CDK_DOCKER: '/bin/false',
    HTTPS_PROXY: 'http://127.0.0.1:9',
    HTTP_PROXY: 'http://127.0.0.1:9',
    NO_PROXY: '',
    npm_config_offline: 'true',
  };
}

beforeAll(async () => {
  out = await mkdtemp(path.join(os.tmpdir(), 'filestore-cdk-out-'));
  built = await mkdtemp(path.join(os.tmpdir(), 'filestore-build-'));
  const started = Date.now();
  const cli = run('npx', ['cdk', 'synth', '--no-notices', '--quiet', '--output', out], { cwd: ROOT, env: offlineEnv(), maxBuffer: 64 * 1024 * 1024 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }),
  );
  // What `npm run build` writes to dist/lambdas, here into a directory of this test's own.
  await bundleLambdas(built);
  synth = { ...(await cli), ms: Date.now() - started };
  console.log(`cdk synth (CLI, offline, bundling included): ${(synth.ms / 1000).toFixed(1)} s`);
}, 240_000);

afterAll(async () => {
  await Promise.all([rm(out, { recursive: true, force: true }), rm(built, { recursive: true, force: true })]);
});

describe('npx cdk synth, offline', () => {
  it('exits 0 and writes the template, with no lookups', async () => {
    expect(synth.code, synth.stderr).toBe(0);
    const template = JSON.parse(await readFile(path.join(out, 'Filestore.template.json'), 'utf8')) as CfnTemplate;
    expect(Object.keys(template.Resources).length).toBeGreaterThan(100);
    const manifest = JSON.parse(await readFile(path.join(out, 'manifest.json'), 'utf8')) as { missing?: unknown[] };
    expect(manifest.missing ?? []).toEqual([]);
    expect(existsSync(path.join(ROOT, 'cdk.context.json'))).toBe(false);
  });

  // cdk-nag under the CLI: the exit code above is the check. The CLI runs cdk/app.ts, whose
  // buildApp registers the AwsSolutions plugin and whose main exits 1 when synth throws; that a
  // finding makes synth throw is shown in-process (cdk-variants.test.ts, "cdk-nag is part of
  // synthesis"). validation-report.json cannot show it: on success aws-cdk-lib writes
  // `pluginReports: []` (successful plugins are left out), so a check of it could not fail.

  it('each function\'s asset is byte for byte the bundle npm run build writes, and holds nothing else', async () => {
    const template = JSON.parse(await readFile(path.join(out, 'Filestore.template.json'), 'utf8')) as CfnTemplate;
    const functions = Object.values(template.Resources).filter((r) => r.Type === 'AWS::Lambda::Function' && String(r.Properties?.Description).startsWith('Filestore '));
    expect(functions.map((f) => f.Properties!.Handler).sort()).toEqual(LAMBDA_NAMES.map((n) => `${n}.handler`).sort());
    const builtMigrations = (await readdir(path.join(built, 'migrations'))).filter((f) => f.endsWith('.sql')).sort();
    expect(builtMigrations.length).toBeGreaterThan(0);
    for (const fn of functions) {
      const name = (fn.Properties!.Handler as string).replace(/\.handler$/, '');
      const hash = (fn.Properties!.Code.S3Key as string).replace(/\.zip$/, '');
      const asset = path.join(out, `asset.${hash}`);
      expect((await stat(asset)).isDirectory(), name).toBe(true);
      const deployed = await readFile(path.join(asset, `${name}.mjs`));
      const bundle = await readFile(path.join(built, `${name}.mjs`));
      expect(deployed.equals(bundle), `${name}.mjs differs from the build's (were lambdas/ or shared/ edited while this test ran?)`).toBe(true);
      const expected = [`${name}.mjs`, `${name}.mjs.map`, ...(name === 'migrate' ? builtMigrations.map((m) => path.join('migrations', m)) : [])].sort();
      expect(bundleFiles(asset), name).toEqual(expected);
      if (name === 'migrate') {
        for (const m of builtMigrations) expect((await readFile(path.join(asset, 'migrations', m))).equals(await readFile(path.join(built, 'migrations', m))), m).toBe(true);
      }
    }
  });
});

describe('CLI telemetry', () => {
  it('is off for every run of the CLI in this repository, not only this test\'s: cdk.json context "cli-telemetry": false', async () => {
    // The CLI (aws-cdk ≥ 2.1100) collects telemetry unless CDK_DISABLE_CLI_TELEMETRY is set, or the
    // context's cli-telemetry is false, or --no-version-reporting is given.
    const cdkJson = JSON.parse(await readFile(path.join(ROOT, 'cdk.json'), 'utf8')) as { context?: Record<string, unknown> };
    expect(cdkJson.context?.['cli-telemetry']).toBe(false);
  });
});

describe('configuration', () => {
  const base = { availabilityZones: ['eu-west-1a', 'eu-west-1b'], s3Mounts: [] };
  const problems = (raw: unknown) => {
    try {
      parseConfig(raw, 'test.json');
    } catch (e) {
      return (e as Error).message;
    }
    return null;
  };

  it('the defaults fill a minimal file', () => {
    const c = parseConfig(base);
    expect(c.stackName).toBe('Filestore');
    expect(c.database.instanceType).toBe('t4g.medium');
    expect(c.redis.nodes).toBe(2);
  });

  it('bad values are refused with one error naming the file and every problem', () => {
    const message = problems({
      ...base,
      availabilityZones: ['eu-west-1a'],
      s3Mounts: [
        { key: 'Media', bucket: 'UPPER', create: true },
        { key: 'a', bucket: 'b-bucket', prefix: 'no-slash', create: false, auditCadence: 'every hour' },
      ],
      surprise: true,
    });
    expect(message).toContain('test.json');
    expect(message).toContain('availabilityZones');
    expect(message).toContain('s3Mounts.0.key');
    expect(message).toContain('s3Mounts.0.bucket');
    expect(message).toContain('s3Mounts.1.prefix');
    expect(message).toContain('s3Mounts.1.auditCadence');
    expect(message).toContain('surprise');
  });

  it('duplicate keys, a bucket both created and imported, AZs outside the region, cadences EventBridge refuses', () => {
    expect(problems({ ...base, s3Mounts: [{ key: 'a', bucket: 'bkt', create: true }, { key: 'a', bucket: 'bkt2', create: true }] })).toContain('mount key "a" appears twice');
    expect(problems({ ...base, s3Mounts: [{ key: 'a', bucket: 'bkt', create: true }, { key: 'b', bucket: 'bkt', prefix: 'x/', create: false }] })).toContain('both created and imported');
    expect(problems({ ...base, region: 'us-east-1' })).toContain('not in region us-east-1');
    expect(problems({ ...base, s3Mounts: [{ key: 'a', bucket: 'bkt', create: true, auditCadence: 'rate(1 hours)' }] })).toContain('rate(1 hour)');
    expect(problems({ ...base, s3Mounts: [{ key: 'a', bucket: 'bkt', create: true, auditCadence: 'rate(2 day)' }] })).toContain('rate(2 days)');
    expect(problems({ ...base, s3Mounts: [{ key: 'a', bucket: 'bkt', create: true, auditCadence: 'rate(2 days)' }] })).toContain('between 1 minute and 1 day');
    expect(cadenceSeconds('rate(30 minutes)')).toBe(1800);
    expect(cadenceSeconds(90)).toBe(5400);
  });

  it('a bucket\'s nested mounts share the outer mount\'s notification (S3 refuses overlapping ones)', () => {
    expect(notificationPrefixes(['', 'tenant/'])).toEqual(['']);
    expect(notificationPrefixes(['a/', 'a/b/', 'c/'])).toEqual(['a/', 'c/']);
    expect(notificationPrefixes(['a/', 'ab/'])).toEqual(['a/', 'ab/']);
  });
});
