import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { FilestoreConfig, S3MountConfig } from '../config.ts';

/** A queue's receives before SQS moves a message to its DLQ (docs/aws.md). */
export const MAX_RECEIVE_COUNT = 5;
/** Visibility timeout of a queue consumed by a function: at least 6× its timeout (AWS's advice for SQS event sources). */
export const VISIBILITY_FACTOR = 6;

export interface StorageProps {
  config: FilestoreConfig;
  /** The S3-event function's timeout (the queue's visibility is 6× it). */
  s3EventsTimeout: Duration;
  /** The reconcile function's timeout. */
  reconcileTimeout: Duration;
}

/** One configured S3 mount and its bucket (created here or imported by name). */
export interface MountedBucket {
  mount: S3MountConfig;
  bucket: s3.IBucket;
}

/**
 * The S3 side (SPEC §11 storage): each mount's bucket, created (encrypted, SSL only, no public
 * access, access-logged, versioned if asked) or imported by name; its object created/removed
 * notifications (filtered by the mount's prefix) → the standard S3-event queue, with a DLQ;
 * and the reconcile queue of S3 mounts' jobs, with a DLQ. Queues: SSE-SQS, SSL only.
 */
export class Storage extends Construct {
  readonly mounts: MountedBucket[] = [];
  readonly s3EventQueue: sqs.Queue;
  readonly s3EventDlq: sqs.Queue;
  readonly reconcileQueue: sqs.Queue;
  readonly reconcileDlq: sqs.Queue;
  readonly accessLogs: s3.Bucket | undefined;

  constructor(scope: Construct, id: string, props: StorageProps) {
    super(scope, id);
    const { config } = props;
    const queue = (name: string, visibility: Duration) => {
      const dlq = new sqs.Queue(this, `${name}Dlq`, {
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
        retentionPeriod: Duration.days(14),
      });
      const q = new sqs.Queue(this, name, {
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
        visibilityTimeout: visibility,
        retentionPeriod: Duration.days(4),
        deadLetterQueue: { queue: dlq, maxReceiveCount: MAX_RECEIVE_COUNT },
      });
      return [q, dlq] as const;
    };
    [this.s3EventQueue, this.s3EventDlq] = queue('S3EventQueue', Duration.seconds(props.s3EventsTimeout.toSeconds() * VISIBILITY_FACTOR));
    [this.reconcileQueue, this.reconcileDlq] = queue('ReconcileQueue', Duration.seconds(props.reconcileTimeout.toSeconds() * VISIBILITY_FACTOR));

    if (config.s3Mounts.some((m) => m.create)) {
      this.accessLogs = new s3.Bucket(this, 'AccessLogs', {
        encryption: s3.BucketEncryption.S3_MANAGED,
        enforceSSL: true,
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
        removalPolicy: RemovalPolicy.RETAIN,
        lifecycleRules: [{ expiration: Duration.days(365) }],
      });
    }

    const buckets = new Map<string, s3.IBucket>();
    for (const mount of config.s3Mounts) {
      let bucket = buckets.get(mount.bucket);
      if (!bucket) {
        const id = `Bucket-${mount.bucket}`;
        bucket = mount.create
          ? new s3.Bucket(this, id, {
              bucketName: mount.bucket,
              encryption: s3.BucketEncryption.S3_MANAGED,
              enforceSSL: true,
              blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
              versioned: mount.versioned,
              serverAccessLogsBucket: this.accessLogs,
              serverAccessLogsPrefix: `${mount.bucket}/`,
              removalPolicy: RemovalPolicy.RETAIN,
              // Uploads through presigned URLs that never completed leave no parts behind.
              lifecycleRules: [{ abortIncompleteMultipartUploadAfter: Duration.days(2) }],
            })
          : s3.Bucket.fromBucketName(this, id, mount.bucket);
        buckets.set(mount.bucket, bucket);
      }
      this.mounts.push({ mount, bucket });
    }

    // Notifications: S3 refuses two configurations whose prefixes overlap for the same events,
    // so a bucket's nested mounts share the outer mount's notification (the handler maps each
    // key to every mount it belongs to).
    const destination = new s3n.SqsDestination(this.s3EventQueue);
    for (const [name, bucket] of buckets) {
      for (const prefix of notificationPrefixes(config.s3Mounts.filter((m) => m.bucket === name).map((m) => m.prefix))) {
        const filters = prefix ? [{ prefix }] : [];
        bucket.addEventNotification(s3.EventType.OBJECT_CREATED, destination, ...filters);
        bucket.addEventNotification(s3.EventType.OBJECT_REMOVED, destination, ...filters);
      }
    }
  }
}

/** The prefixes of a bucket's mounts that no other of its mounts' prefixes covers ('' covers all). */
export function notificationPrefixes(prefixes: string[]): string[] {
  const unique = [...new Set(prefixes)].sort();
  return unique.filter((p) => !unique.some((q) => q !== p && p.startsWith(q)));
}
