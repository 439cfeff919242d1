import type { SQSEvent } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireRunPool } from '../shared/reconcile/lambda-run.ts';
import { processS3Events } from '../shared/reconcile/s3-events/index.ts';
import type { Filestore } from '../shared/runtime.ts';
import { wireTestFilestore } from './support/filestore.ts';

/**
 * The S3-event and audit Lambdas reconcile with one connection for a run's lock and another
 * for its queries: a pool of one would wait for itself until the Lambda timed out. They say so
 * at once, with the variable to set.
 */
describe('Lambdas that reconcile refuse a pool of one connection', () => {
  let one: Filestore;
  let two: Filestore;
  beforeAll(async () => {
    one = await wireTestFilestore({ poolSize: 1 });
    two = await wireTestFilestore({ poolSize: 2 });
  });
  afterAll(async () => {
    await one?.close();
    await two?.close();
  });

  it('the S3-event handler', async () => {
    const event = { Records: [] } as unknown as SQSEvent;
    await expect(processS3Events(one, event, undefined)).rejects.toMatchObject({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_DB_POOL_SIZE=2') });
    await expect(processS3Events(two, event, undefined)).resolves.toEqual({ batchItemFailures: [] });
  });

  it('the audit and reconcile runs', () => {
    expect(() => requireRunPool(one, 'audit')).toThrow(expect.objectContaining({ code: 'CONFIG_ERROR', message: expect.stringContaining('FILESTORE_DB_POOL_SIZE=2') }));
    expect(() => requireRunPool(two, 'audit')).not.toThrow();
  });
});
