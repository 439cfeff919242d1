import { Duration, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import { LambdaInvoke } from 'aws-cdk-lib/aws-scheduler-targets';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { FilestoreConfig } from '../config.ts';

/** Retries of a schedule's invocation that EventBridge Scheduler could not deliver. */
export const SCHEDULE_RETRY_ATTEMPTS = 2;

/**
 * EventBridge Scheduler (SPEC §11 schedules): the maintenance function every minute, and one
 * audit schedule per S3 mount at its cadence with `{"mountId": "<key>"}`. Retries are capped
 * (SCHEDULE_RETRY_ATTEMPTS, and an event older than the schedule's period is dropped: the
 * next one does the same work), and what fails goes to a DLQ.
 */
export class Schedules extends Construct {
  readonly dlq: sqs.Queue;
  readonly maintenance: scheduler.Schedule;
  readonly audits: Record<string, scheduler.Schedule> = {};
  /** The roles EventBridge Scheduler invokes each function with (lambda:InvokeFunction on it alone). */
  readonly maintenanceRole: iam.Role;
  readonly auditRole: iam.Role;

  constructor(scope: Construct, id: string, props: { config: FilestoreConfig; maintenance: lambda.IFunction; audit: lambda.IFunction }) {
    super(scope, id);
    this.dlq = new sqs.Queue(this, 'Dlq', { encryption: sqs.QueueEncryption.SQS_MANAGED, enforceSSL: true, retentionPeriod: Duration.days(14) });
    const role = (id: string, fn: string) =>
      new iam.Role(this, id, {
        description: `EventBridge Scheduler: invokes the Filestore ${fn} function`,
        assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', { conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(this).account } } }),
      });
    this.maintenanceRole = role('MaintenanceRole', 'maintenance');
    this.auditRole = role('AuditRole', 'audit');
    this.maintenance = new scheduler.Schedule(this, 'Maintenance', {
      description: 'Filestore maintenance pass (outbox, pending journal entries, rollups)',
      schedule: scheduler.ScheduleExpression.rate(Duration.minutes(1)),
      target: new LambdaInvoke(props.maintenance, { role: this.maintenanceRole, retryAttempts: SCHEDULE_RETRY_ATTEMPTS, maxEventAge: Duration.minutes(1), deadLetterQueue: this.dlq }),
    });
    for (const mount of props.config.s3Mounts) {
      const cadence = typeof mount.auditCadence === 'number' ? scheduler.ScheduleExpression.rate(Duration.minutes(mount.auditCadence)) : scheduler.ScheduleExpression.expression(mount.auditCadence);
      this.audits[mount.key] = new scheduler.Schedule(this, `Audit-${mount.key}`, {
        description: `Filestore audit of S3 mount ${mount.key}`,
        schedule: cadence,
        target: new LambdaInvoke(props.audit, {
          role: this.auditRole,
          input: scheduler.ScheduleTargetInput.fromObject({ mountId: mount.key }),
          retryAttempts: SCHEDULE_RETRY_ATTEMPTS,
          maxEventAge: Duration.minutes(15),
          deadLetterQueue: this.dlq,
        }),
      });
    }
  }
}
