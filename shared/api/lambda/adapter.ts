import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import type { ConfiguredS3Mount } from '../../catalogue/s3-mounts.ts';
import type { Filestore } from '../../runtime.ts';
import { createApi, type Api } from '../app.ts';
import { AuthorizerContextAuthenticator, type AuthorizerContext } from '../auth.ts';
import { buildApiDeps } from '../deps.ts';
import { MAX_LAMBDA_FILE_BYTES, toApiRequest, toLambdaResult } from './convert.ts';

/** An HTTP API event whose route has the Lambda authorizer (payload 2.0, simple responses) in front. */
export type ApiGatewayEvent = APIGatewayProxyEventV2 & {
  requestContext: APIGatewayProxyEventV2['requestContext'] & { authorizer?: { lambda?: AuthorizerContext } };
};

export interface LambdaApi {
  api: Api;
  /** Answers one invocation; never throws for a request's own failure (errors are JSON answers). */
  handle(event: ApiGatewayEvent): Promise<APIGatewayProxyStructuredResultV2>;
}

/**
 * The routes of SPEC §4 for API Gateway: the same createApi as the node:http server, built once
 * per container. No event stream (GET /v1/events/stream answers 501 naming the agent's), no
 * held job requests (`waitMs` is answered at once: deps.ts `longPolls`), and no
 * /metrics text (Lambdas publish EMF); file bodies are bounded by the Lambda payload.
 */
export async function createLambdaApi(
  core: Filestore,
  o: { log(line: string): void; /** FILESTORE_S3_MOUNTS: see ApiDeps.configuredS3Mounts. */ configuredS3Mounts?: readonly ConfiguredS3Mount[] | undefined },
): Promise<LambdaApi> {
  const { deps } = await buildApiDeps(core, { log: o.log, metrics: null, maxFileBodyBytes: MAX_LAMBDA_FILE_BYTES, configuredS3Mounts: o.configuredS3Mounts, longPolls: false });
  const auth = new AuthorizerContextAuthenticator();
  const api = createApi(deps, auth);
  return {
    api,
    async handle(event) {
      const started = process.hrtime.bigint();
      const request = toApiRequest(event);
      const response = await auth.runAs(event.requestContext.authorizer?.lambda, () => api.handle(request));
      const result = await toLambdaResult(response);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      core.metrics.recordHttpRequest(request.method, response.route, result.statusCode ?? response.status, seconds);
      return result;
    },
  };
}
