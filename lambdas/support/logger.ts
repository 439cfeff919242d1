import { Logger } from '@aws-lambda-powertools/logger';

/**
 * The Powertools logger of the container: JSON lines with the invocation's context and
 * correlation id once lambdaHandler injected them. Service name: POWERTOOLS_SERVICE_NAME, else
 * `filestore`. Constructing it opens nothing.
 */
export const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME || 'filestore' });
