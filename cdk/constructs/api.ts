import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaAuthorizer, HttpLambdaResponseType } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import type { FilestoreConfig } from '../config.ts';

/**
 * The HTTP API (SPEC §11 API): every route (`$default`) → the API function (payload 2.0),
 * behind the Lambda authorizer (simple responses; identity source the Authorization header
 * alone, so a cached answer serves one token: lambdas/authorizer.ts), access logs to a log
 * group, the default stage throttled.
 */
export class Api extends Construct {
  readonly httpApi: apigw.HttpApi;
  readonly stage: apigw.HttpStage;
  readonly accessLogs: logs.LogGroup;

  constructor(scope: Construct, id: string, props: { config: FilestoreConfig; api: lambda.IFunction; authorizer: lambda.IFunction }) {
    super(scope, id);
    const authorizer = new HttpLambdaAuthorizer('TokenAuthorizer', props.authorizer, {
      authorizerName: 'filestore-tokens',
      responseTypes: [HttpLambdaResponseType.SIMPLE],
      identitySource: ['$request.header.Authorization'],
      resultsCacheTtl: Duration.minutes(5),
    });
    this.httpApi = new apigw.HttpApi(this, 'HttpApi', {
      description: 'Filestore API (SPEC §4)',
      createDefaultStage: false,
      defaultAuthorizer: authorizer,
      defaultIntegration: new HttpLambdaIntegration('Api', props.api, { payloadFormatVersion: apigw.PayloadFormatVersion.VERSION_2_0 }),
    });
    this.accessLogs = new logs.LogGroup(this, 'AccessLogs', { retention: props.config.logRetentionDays, removalPolicy: RemovalPolicy.DESTROY });
    this.stage = new apigw.HttpStage(this, 'DefaultStage', {
      httpApi: this.httpApi,
      stageName: '$default',
      autoDeploy: true,
      throttle: { rateLimit: props.config.api.throttleRateLimit, burstLimit: props.config.api.throttleBurstLimit },
      accessLogSettings: {
        destination: new apigw.LogGroupLogDestination(this.accessLogs),
        format: AccessLogFormat.custom(
          JSON.stringify({
            requestId: '$context.requestId',
            ip: '$context.identity.sourceIp',
            requestTime: '$context.requestTime',
            method: '$context.httpMethod',
            path: '$context.path',
            status: '$context.status',
            responseLength: '$context.responseLength',
            latency: '$context.responseLatency',
            integrationError: '$context.integrationErrorMessage',
            authorizerError: '$context.authorizer.error',
            principal: '$context.authorizer.principal',
          }),
        ),
      },
    });
  }

  get url(): string {
    return this.stage.url;
  }
}
