import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { bundleLambdaAssets, type LambdaBundles } from './bundles.ts';
import type { FilestoreConfig } from './config.ts';
import { AgentAccess } from './constructs/agents.ts';
import { Api } from './constructs/api.ts';
import { Compute, FUNCTION_SETTINGS } from './constructs/compute.ts';
import { DATABASE_NAME, DATABASE_PORT, DATABASE_USER, Data } from './constructs/data.ts';
import { Migrations } from './constructs/migrations.ts';
import { Network } from './constructs/network.ts';
import { Observability, RECONCILE_OLDEST_SECONDS, S3_EVENTS_OLDEST_SECONDS } from './constructs/observability.ts';
import { Schedules } from './constructs/schedules.ts';
import { Secrets } from './constructs/secrets.ts';
import { Storage } from './constructs/storage.ts';
import { acknowledgeFindings } from './nag.ts';

export interface FilestoreStackProps extends StackProps {
  config: FilestoreConfig;
  /** The Lambda bundles (default: bundled now with the build's esbuild options). */
  bundles?: LambdaBundles;
  /** Tests: leave cdk-nag's findings unacknowledged (default false), to see that each acknowledgement has its finding. */
  skipAcknowledgements?: boolean;
}

/** The AWS half of Filestore (SPEC §11): one construct per concern. */
export class FilestoreStack extends Stack {
  readonly network: Network;
  readonly data: Data;
  readonly secrets: Secrets;
  readonly storage: Storage;
  readonly compute: Compute;
  readonly api: Api;
  readonly schedules: Schedules;
  readonly migrations: Migrations;
  readonly observability: Observability;
  readonly agents: AgentAccess;

  constructor(scope: Construct, id: string, props: FilestoreStackProps) {
    super(scope, id, { description: 'Filestore: the AWS half (Lambdas, RDS PostgreSQL + RDS Proxy, ElastiCache, SQS, schedules)', ...props });
    const { config } = props;
    const bundles = props.bundles ?? bundleLambdaAssets();

    this.network = new Network(this, 'Network', config);
    this.data = new Data(this, 'Data', this.network, config);
    this.secrets = new Secrets(this, 'Secrets');
    this.storage = new Storage(this, 'Storage', { config, s3EventsTimeout: FUNCTION_SETTINGS['s3-events'].timeout, reconcileTimeout: FUNCTION_SETTINGS.reconcile.timeout });
    this.compute = new Compute(this, 'Compute', { config, bundles, network: this.network, data: this.data, storage: this.storage, secrets: this.secrets });
    const f = this.compute.functions;
    this.api = new Api(this, 'Api', { config, api: f.api, authorizer: f.authorizer });
    this.schedules = new Schedules(this, 'Schedules', { config, maintenance: f.maintenance, audit: f.audit });
    this.migrations = new Migrations(this, 'Migrations', {
      migrate: f.migrate,
      timeout: FUNCTION_SETTINGS.migrate.timeout,
      after: [this.data.database, this.data.proxy],
      before: [f.api, f.authorizer, f['s3-events'], f.audit, f.reconcile, f.maintenance, this.api, this.schedules],
    });
    this.observability = new Observability(this, 'Observability', {
      config,
      functions: f,
      dlqs: { S3Events: this.storage.s3EventDlq, Reconcile: this.storage.reconcileDlq, Schedules: this.schedules.dlq },
      queues: {
        S3Events: { queue: this.storage.s3EventQueue, oldestSeconds: S3_EVENTS_OLDEST_SECONDS },
        Reconcile: { queue: this.storage.reconcileQueue, oldestSeconds: RECONCILE_OLDEST_SECONDS },
      },
      api: this.api.httpApi,
    });
    this.agents = new AgentAccess(this, 'Agents', {
      proxy: this.data.proxy,
      // Not the database secret: agents connect through the proxy with IAM auth.
      secrets: [this.data.redisAuthSecret, this.secrets.commandSecret, this.secrets.apiTokens],
    });

    const out = (id: string, value: string, description: string) => new CfnOutput(this, id, { value, description });
    out('ApiUrl', this.api.url, 'FILESTORE_URL of clients and the CLI: the HTTP API (bearer tokens from the ApiTokensSecretArn list)');
    // The agents' database variables (FILESTORE_DB_IAM_AUTH=true): the Lambdas' own values.
    out('DatabaseProxyEndpoint', this.data.proxy.endpoint, `FILESTORE_DB_HOST of the Lambdas and on-prem agents: the RDS Proxy (IAM auth as "${DATABASE_USER}", TLS), reachable only inside the VPC and over the VPN / Direct Connect routed into it`);
    out('DatabasePort', String(DATABASE_PORT), 'FILESTORE_DB_PORT: the proxy\'s port, the only database port the on-prem CIDR reaches');
    out('DatabaseName', DATABASE_NAME, 'FILESTORE_DB_NAME: the PostgreSQL database of the catalogue');
    out('DatabaseUser', DATABASE_USER, 'FILESTORE_DB_USER: the PostgreSQL user of the Lambdas and agents through the proxy (rds-db:connect, AgentPolicyArn for agents)');
    out('Region', this.region, 'AWS_REGION of on-prem agents: the region their database tokens are signed for');
    out('DatabaseSecretArn', this.data.databaseSecret.secretArn, 'Secrets Manager secret of the master credentials (rotated): read only by the proxy and its rotation function, never by agents');
    out('RedisEndpoint', this.data.redis.attrPrimaryEndPointAddress, 'ElastiCache primary endpoint: agents\' REDIS_URL is rediss://:<AUTH token>@<this>:<RedisPort>');
    out('RedisPort', this.data.redis.attrPrimaryEndPointPort, 'ElastiCache port');
    out('RedisAuthSecretArn', this.data.redisAuthSecret.secretArn, 'Secrets Manager secret of the Redis AUTH token (plain text)');
    out('CommandSecretArn', this.secrets.commandSecret.secretArn, 'Secrets Manager secret of FILESTORE_COMMAND_SECRET (agents verify dispatched commands with it)');
    out('ApiTokensSecretArn', this.secrets.apiTokens.secretArn, 'Secrets Manager secret of the API token hashes (FILESTORE_API_TOKENS JSON; starts as [])');
    out('S3EventQueueUrl', this.storage.s3EventQueue.queueUrl, 'SQS queue of the S3 event notifications');
    out('S3EventDlqUrl', this.storage.s3EventDlq.queueUrl, 'DLQ of the S3 event queue (redrive after fixing the cause)');
    out('ReconcileQueueUrl', this.storage.reconcileQueue.queueUrl, 'SQS reconcile queue of S3 mounts\' jobs (FILESTORE_RECONCILE_QUEUE_URL)');
    out('ReconcileDlqUrl', this.storage.reconcileDlq.queueUrl, 'DLQ of the reconcile queue');
    out('ScheduleDlqUrl', this.schedules.dlq.queueUrl, 'DLQ of EventBridge Scheduler invocations that failed');
    out('AgentPolicyArn', this.agents.policy.managedPolicyArn, 'IAM managed policy to attach to the on-prem agents\' role or user: rds-db:connect through the proxy, the Redis AUTH, command and API-token secrets');
    out('AlarmTopicArn', this.observability.topic.topicArn, 'SNS topic of the alarms');
    out('DashboardName', this.observability.dashboard.dashboardName, 'CloudWatch dashboard');
    out('VpcId', this.network.vpc.vpcId, 'VPC: attach the VPN / Direct Connect gateway of the on-prem network here');
    out('S3Mounts', JSON.stringify(config.s3Mounts.map((m) => ({ key: m.key, bucket: m.bucket, prefix: m.prefix }))), 'The S3 mounts registered at deploy (FILESTORE_S3_MOUNTS)');

    if (!props.skipAcknowledgements) acknowledgeFindings(this);
  }
}
