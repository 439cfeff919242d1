import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { createLambdaApi, type ApiGatewayEvent, type LambdaApi } from '../shared/api/lambda/index.ts';
import type { Filestore } from '../shared/index-runtime.ts';
import { lambdaHandler, logger } from './support/powertools.ts';

// One API per core: the core (and so this) lives as long as the container.
const apis = new WeakMap<Filestore, Promise<LambdaApi>>();

/**
 * API Gateway HTTP API (payload 2.0) behind the Lambda authorizer → the routes of SPEC §4
 * (shared/api/lambda). Each route's scope is checked again against the authorizer's context.
 */
export const handler = lambdaHandler<ApiGatewayEvent, APIGatewayProxyStructuredResultV2>('api', async (event, _context, { core, config }) => {
  let api = apis.get(core);
  if (!api) {
    // FILESTORE_S3_MOUNTS: the stack's S3 mounts, the only ones this API registers.
    api = createLambdaApi(core, { log: (line) => logger.warn(line), configuredS3Mounts: config.s3Mounts });
    apis.set(core, api);
  }
  return (await api).handle(event);
});
