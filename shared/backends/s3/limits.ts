/**
 * The largest body one PutObject carries (5 GiB; https://docs.aws.amazon.com/AmazonS3/latest/userguide/upload-objects.html):
 * the most a presigned upload can be. Larger needs a multipart upload, which presigned uploads do not offer.
 * Kept apart from direct.ts so that checking it does not load the AWS SDK.
 */
export const MAX_UPLOAD_BYTES = 5 * 1024 ** 3;
