// The API behind API Gateway, for lambdas/api.ts.
export { createLambdaApi, type ApiGatewayEvent, type LambdaApi } from './adapter.ts';
