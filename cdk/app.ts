import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { fileURLToPath } from 'node:url';
import { loadConfig, type FilestoreConfig } from './config.ts';
import { FilestoreStack } from './stack.ts';
import type { LambdaBundles } from './bundles.ts';

/** Feature flags the stack is written for (set before any construct, so tests and the CLI agree). */
export const FEATURE_FLAGS: Readonly<Record<string, unknown>> = {
  // Server access logs are delivered through a bucket policy, not the deprecated ACL.
  '@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy': true,
};

/** The example configuration, used when `-c config=<path>` is not given. */
export const DEFAULT_CONFIG = fileURLToPath(new URL('./config.example.json', import.meta.url));

/**
 * The CDK app: one FilestoreStack from the configuration, checked by cdk-nag's AwsSolutions
 * pack (v3: a policy validation plugin; synthesis fails on any unacknowledged finding).
 */
export function buildApp(o: { app?: App; config?: FilestoreConfig; bundles?: LambdaBundles; skipAcknowledgements?: boolean } = {}): { app: App; stack: FilestoreStack; nag: AwsSolutionsChecks } {
  const app = o.app ?? new App();
  for (const [k, v] of Object.entries(FEATURE_FLAGS)) if (app.node.tryGetContext(k) === undefined) app.node.setContext(k, v);
  const configPath = (app.node.tryGetContext('config') as string | undefined) ?? DEFAULT_CONFIG;
  const config = o.config ?? loadConfig(configPath);
  const env = config.account || config.region ? { account: config.account, region: config.region } : undefined;
  const stack = new FilestoreStack(app, config.stackName, { config, env, bundles: o.bundles, skipAcknowledgements: o.skipAcknowledgements });
  const nag = new AwsSolutionsChecks(app);
  Validations.of(app).addPlugins(nag);
  return { app, stack, nag };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    buildApp().app.synth();
  } catch (e) {
    console.error((e as Error).message);
    process.exit(1);
  }
}
