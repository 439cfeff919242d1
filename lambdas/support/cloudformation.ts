import type { CloudFormationCustomResourceEvent, CloudFormationCustomResourceResponse } from 'aws-lambda';

/** CloudFormation's limit on a response document (4 KB): a long failure reason is cut to fit. */
const MAX_REASON = 2_000;

/** What a custom resource's work answers: its physical id and attributes (`Fn::GetAtt`). */
export interface CustomResourceResult {
  physicalResourceId: string;
  data?: Record<string, string> | undefined;
}

/** Whether `event` is a CloudFormation custom-resource request (directly, or through CDK's Provider framework). */
export function isCustomResourceEvent(event: unknown): event is CloudFormationCustomResourceEvent {
  const e = event as Partial<CloudFormationCustomResourceEvent> | null;
  return typeof e === 'object' && e !== null && (e.RequestType === 'Create' || e.RequestType === 'Update' || e.RequestType === 'Delete') && typeof e.StackId === 'string';
}

/**
 * The URL to answer on, when the event carries a real one: CloudFormation invoking the
 * function directly does (a presigned S3 URL); CDK's Provider framework passes `'...'` and
 * answers itself from what the function returns or throws; a CDK trigger sends no event.
 */
export function responseUrlOf(event: CloudFormationCustomResourceEvent): URL | null {
  try {
    const url = new URL(event.ResponseURL);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url : null;
  } catch {
    return null;
  }
}

/**
 * Sends the custom resource's outcome to CloudFormation (the response protocol:
 * https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html).
 * The presigned URL is signed without a content type, so none is sent. A refused PUT throws:
 * CloudFormation would otherwise wait an hour for an answer that never comes.
 */
export async function sendCustomResourceResponse(
  url: URL,
  event: CloudFormationCustomResourceEvent,
  outcome: { status: 'SUCCESS'; result: CustomResourceResult } | { status: 'FAILED'; reason: string },
): Promise<CloudFormationCustomResourceResponse> {
  const physical = outcome.status === 'SUCCESS' ? outcome.result.physicalResourceId : 'PhysicalResourceId' in event ? event.PhysicalResourceId : event.RequestId;
  const body: CloudFormationCustomResourceResponse =
    outcome.status === 'SUCCESS'
      ? { Status: 'SUCCESS', PhysicalResourceId: physical, StackId: event.StackId, RequestId: event.RequestId, LogicalResourceId: event.LogicalResourceId, Data: outcome.result.data }
      : { Status: 'FAILED', Reason: outcome.reason.slice(0, MAX_REASON), PhysicalResourceId: physical, StackId: event.StackId, RequestId: event.RequestId, LogicalResourceId: event.LogicalResourceId };
  const text = JSON.stringify(body);
  const res = await fetch(url, { method: 'PUT', body: text, headers: { 'content-type': '', 'content-length': String(Buffer.byteLength(text)) } });
  if (!res.ok) throw new Error(`CloudFormation refused the custom resource response: HTTP ${res.status}`);
  return body;
}
