import { ArnFormat, Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import type * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { Construct } from 'constructs';
import { cadenceSeconds, type FilestoreConfig } from '../config.ts';
import { METRICS_NAMESPACE } from './compute.ts';

/** Slack above twice the cadence before a mount's audit age alarms (a slow audit, a late schedule). */
export const AUDIT_AGE_MARGIN_SECONDS = 15 * 60;
/** Oldest message in the S3-event queue: events are handled in seconds normally. */
export const S3_EVENTS_OLDEST_SECONDS = 15 * 60;
/** Oldest message in the reconcile queue: put-offs wait 30 s at a time, full audits a run each. */
export const RECONCILE_OLDEST_SECONDS = 60 * 60;

export interface ObservabilityProps {
  config: FilestoreConfig;
  functions: Record<string, lambda.IFunction>;
  dlqs: Record<string, sqs.IQueue>;
  queues: Record<string, { queue: sqs.IQueue; oldestSeconds: number }>;
  api: apigw.HttpApi;
}

/** Seconds of the audit-age alarm: above twice the cadence plus a margin. */
export function auditAgeThreshold(cadence: string | number): number {
  return 2 * cadenceSeconds(cadence) + AUDIT_AGE_MARGIN_SECONDS;
}

/**
 * Alarms and a dashboard (SPEC §11 observability): DLQ depth (each DLQ), oldest message age
 * (the S3-event and reconcile queues), errors and throttles of each function, the API's 5xx,
 * and per S3 mount `filestore_audit_age_seconds{mount}` (the maintenance Lambda publishes it every
 * minute for each S3 mount, 0 for a paused one; the audit Lambda after its runs) above twice the
 * cadence plus a margin, missing data counting as breaching (that pipeline stopped). Every alarm
 * notifies the SNS topic (KMS-encrypted; CloudWatch may use the key), with an optional e-mail
 * subscription.
 */
export class Observability extends Construct {
  readonly topic: sns.Topic;
  readonly alarms: Record<string, cloudwatch.Alarm> = {};
  readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const key = new kms.Key(this, 'TopicKey', { description: 'Filestore alarm topic', enableKeyRotation: true });
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
      }),
    );
    this.topic = new sns.Topic(this, 'Alarms', { displayName: 'Filestore alarms', masterKey: key, enforceSSL: true });
    // enforceSSL writes a topic policy (its Deny of plain HTTP), which replaces SNS's default
    // "the account may publish": CloudWatch alarms of this account are allowed explicitly.
    const stack = Stack.of(this);
    this.topic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsPublish',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.topic.topicArn],
        conditions: {
          StringEquals: { 'aws:SourceAccount': stack.account },
          ArnLike: { 'aws:SourceArn': stack.formatArn({ service: 'cloudwatch', resource: 'alarm', resourceName: '*', arnFormat: ArnFormat.COLON_RESOURCE_NAME }) },
        },
      }),
    );
    if (props.config.alarmEmail) this.topic.addSubscription(new subscriptions.EmailSubscription(props.config.alarmEmail));
    const action = new actions.SnsAction(this.topic);
    const alarm = (name: string, metric: cloudwatch.IMetric, o: { threshold: number; description: string; missing?: cloudwatch.TreatMissingData; periods?: number }) => {
      const a = new cloudwatch.Alarm(this, name, {
        metric,
        threshold: o.threshold,
        evaluationPeriods: o.periods ?? 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: o.missing ?? cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: o.description,
      });
      a.addAlarmAction(action);
      a.addOkAction(action);
      this.alarms[name] = a;
      return a;
    };

    for (const [name, dlq] of Object.entries(props.dlqs)) {
      alarm(`${name}DlqDepth`, dlq.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' }), {
        threshold: 0,
        description: `Filestore: messages in the ${name} DLQ (docs/deploy.md, DLQ redrive)`,
      });
    }
    for (const [name, { queue, oldestSeconds }] of Object.entries(props.queues)) {
      alarm(`${name}OldestMessage`, queue.metricApproximateAgeOfOldestMessage({ period: Duration.minutes(1), statistic: 'Maximum' }), {
        threshold: oldestSeconds,
        periods: 5,
        description: `Filestore: the oldest message of the ${name} queue waits over ${oldestSeconds} s`,
      });
    }
    for (const [name, fn] of Object.entries(props.functions)) {
      alarm(`${name}Errors`, fn.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' }), { threshold: 0, description: `Filestore: the ${name} function failed` });
      alarm(`${name}Throttles`, fn.metricThrottles({ period: Duration.minutes(5), statistic: 'Sum' }), { threshold: 0, description: `Filestore: the ${name} function was throttled` });
    }
    alarm('Api5xx', props.api.metricServerError({ period: Duration.minutes(5), statistic: 'Sum' }), { threshold: 0, description: 'Filestore: the HTTP API answered 5xx' });
    const auditAges: cloudwatch.IMetric[] = [];
    for (const mount of props.config.s3Mounts) {
      const seconds = cadenceSeconds(mount.auditCadence);
      // The maintenance Lambda publishes it every minute (paused mounts 0), audits after each run:
      // a whole period without a value means the pipeline stopped (missing = breaching).
      const period = Math.min(86_400, Math.ceil((2 * seconds) / 60) * 60);
      const metric = new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName: 'filestore_audit_age_seconds',
        dimensionsMap: { service: 'filestore', mount: mount.key },
        statistic: 'Maximum',
        period: Duration.seconds(period),
      });
      auditAges.push(metric.with({ label: `audit age ${mount.key}`, period: Duration.minutes(5) }));
      alarm(`AuditAge-${mount.key}`, metric, {
        threshold: auditAgeThreshold(mount.auditCadence),
        missing: cloudwatch.TreatMissingData.BREACHING,
        description: `Filestore: S3 mount ${mount.key} has no finished audit for over twice its cadence (${mount.auditCadence}) plus ${AUDIT_AGE_MARGIN_SECONDS / 60} minutes, or its age is no longer published (maintenance stopped); paused: 0`,
      });
    }

    const fns = Object.entries(props.functions);
    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', { dashboardName: `${props.config.stackName}-filestore` });
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({ title: 'API requests and 5xx', left: [props.api.metricCount()], right: [props.api.metricServerError(), props.api.metricClientError()] }),
      new cloudwatch.GraphWidget({ title: 'API latency (p99)', left: [props.api.metricLatency({ statistic: 'p99' })] }),
      new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: Object.values(this.alarms), width: 12 }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({ title: 'Lambda errors', left: fns.map(([, fn]) => fn.metricErrors()), width: 8 }),
      new cloudwatch.GraphWidget({ title: 'Lambda throttles', left: fns.map(([, fn]) => fn.metricThrottles()), width: 8 }),
      new cloudwatch.GraphWidget({ title: 'Lambda duration (p99)', left: fns.map(([, fn]) => fn.metricDuration({ statistic: 'p99' })), width: 8 }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({ title: 'Queue oldest message (s)', left: Object.values(props.queues).map(({ queue }) => queue.metricApproximateAgeOfOldestMessage()), width: 8 }),
      new cloudwatch.GraphWidget({ title: 'DLQ depth', left: Object.values(props.dlqs).map((q) => q.metricApproximateNumberOfMessagesVisible()), width: 8 }),
      new cloudwatch.GraphWidget({ title: 'Audit age per S3 mount (s)', left: auditAges, width: 8 }),
    );
  }
}
