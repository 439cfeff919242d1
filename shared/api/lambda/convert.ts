import { Readable } from 'node:stream';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { FilestoreError } from '../../errors.ts';
import type { HandledResponse } from '../app.ts';
import type { ApiRequest } from '../route.ts';

/**
 * The API Lambda's converter: an API Gateway HTTP API event (payload format 2.0) to the
 * ApiRequest the node:http server builds (http-server.ts), and a HandledResponse back
 * (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html).
 */

/** A synchronous invocation's response payload is at most 6 MB (Lambda quotas). */
export const LAMBDA_PAYLOAD_BYTES = 6 * 1024 * 1024;
/**
 * Raw file bytes that fit once base64-encoded (4/3 larger), with room left for the headers
 * and the JSON envelope: ~4.4 MiB.
 */
export const MAX_LAMBDA_FILE_BYTES = Math.floor(4.4 * 1024 * 1024);

/**
 * HTTP API hands `rawPath` over percent-DECODED (a %2F is already a "/", a %3F a "?"), while
 * the routes, like node:http, expect the path as sent, still encoded (the router decodes
 * parameters). Each segment is encoded again, so a decoded "%", space, "?", "#" or non-ASCII
 * character reaches the router as its escape, exactly as an encoded request line does. An
 * encoded "/" cannot be told from a separator any more: no route takes one inside a path
 * parameter (file paths travel in the query string, which rawQueryString keeps encoded).
 */
export function requestPath(event: Pick<APIGatewayProxyEventV2, 'rawPath' | 'requestContext'>): string {
  let path = event.rawPath || '/';
  // A named stage (not $default) prefixes the path with it.
  const stage = event.requestContext?.stage;
  if (stage && stage !== '$default' && (path === `/${stage}` || path.startsWith(`/${stage}/`))) path = path.slice(stage.length + 1) || '/';
  return path
    .split('/')
    .map((segment) => encodeURIComponent(segment))
    .join('/');
}

/**
 * The first value of each query parameter, as http-server.ts keeps it. From rawQueryString:
 * queryStringParameters joins repeated keys with commas, which cannot be told from a comma in a value.
 */
export function requestQuery(rawQueryString: string | undefined): Record<string, string> {
  const query: Record<string, string> = {};
  if (rawQueryString) for (const [k, v] of new URLSearchParams(rawQueryString)) if (!(k in query)) query[k] = v;
  return query;
}

export function toApiRequest(event: APIGatewayProxyEventV2): ApiRequest {
  const method = event.requestContext.http.method.toUpperCase();
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(event.headers ?? {})) if (value !== undefined) headers[name.toLowerCase()] = value;
  // Payload 2.0 moves Cookie headers to `cookies`.
  if (event.cookies && event.cookies.length > 0) headers.cookie = event.cookies.join('; ');
  const hasBody = method !== 'GET' && method !== 'HEAD';
  let body: Readable | null = null;
  if (hasBody) {
    const bytes = event.body === undefined ? Buffer.alloc(0) : Buffer.from(event.body, event.isBase64Encoded ? 'base64' : 'utf8');
    body = Readable.from(bytes.length > 0 ? [bytes] : []);
    // The body is here whole: its length is known, whatever the event's headers say.
    headers['content-length'] = String(bytes.length);
  }
  return { method, path: requestPath(event), query: requestQuery(event.rawQueryString), headers, body };
}

/**
 * A HandledResponse as the Lambda's result: JSON and text as they are, file bytes base64-encoded.
 * A body that cannot fit the payload is 413 PAYLOAD_TOO_LARGE here rather than a failed invocation
 * (routes that can do better, like S3 downloads, redirect before it comes to this).
 */
export async function toLambdaResult(r: HandledResponse): Promise<APIGatewayProxyStructuredResultV2> {
  const headers: Record<string, string> = { ...(r.headers ?? {}) };
  if ('jsonText' in r) return { statusCode: r.status, headers: { ...headers, 'content-type': JSON_TYPE }, body: r.jsonText, isBase64Encoded: false };
  if ('json' in r) {
    return { statusCode: r.status, headers: { ...headers, 'content-type': JSON_TYPE }, body: r.json === undefined ? '' : JSON.stringify(r.json), isBase64Encoded: false };
  }
  if ('text' in r) return { statusCode: r.status, headers: { 'content-type': 'text/plain; charset=utf-8', ...headers }, body: r.text, isBase64Encoded: false };
  if ('stream' in r) {
    const bytes = await readAtMost(r.stream, MAX_LAMBDA_FILE_BYTES);
    if (bytes === null) return errorResult(tooLarge(), headers);
    delete headers['content-length']; // API Gateway sets it for the decoded body
    return { statusCode: r.status, headers, body: bytes.toString('base64'), isBase64Encoded: true };
  }
  // Only a deployment with an event tail answers with a stream; the Lambda's deps have none.
  return errorResult(new FilestoreError('NOT_IMPLEMENTED', 'event streams are not served by the API Lambda; subscribe to GET /v1/events/stream on an agent'), headers);
}

const JSON_TYPE = 'application/json; charset=utf-8';

export const tooLarge = () =>
  new FilestoreError(
    'PAYLOAD_TOO_LARGE',
    `the API Lambda carries at most ${MAX_LAMBDA_FILE_BYTES} bytes of a file per request: ask for a part with Range (bytes=0-${MAX_LAMBDA_FILE_BYTES - 1}, …), or use the owning agent's API`,
    { maxBytes: MAX_LAMBDA_FILE_BYTES },
  );

function errorResult(e: FilestoreError, headers: Record<string, string>): APIGatewayProxyStructuredResultV2 {
  const out: Record<string, string> = { 'content-type': JSON_TYPE };
  const correlationId = headers['x-correlation-id'];
  if (correlationId) out['x-correlation-id'] = correlationId;
  return { statusCode: e.status, headers: out, body: JSON.stringify({ error: e.toJSON() }), isBase64Encoded: false };
}

/** The whole stream, or null (stream destroyed) once it passes `max` bytes. */
async function readAtMost(stream: Readable, max: number): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      size += (chunk as Buffer).length;
      if (size > max) return null;
      chunks.push(chunk as Buffer);
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks);
}
