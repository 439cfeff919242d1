// S3 event notifications, for lambdas/s3-events.ts.
export { processS3Events } from './process.ts';
