import { checksumSha256 } from '../request.ts';
import { CancelledUpload, CommandResult, ErrorBody, PresignedUpload, UploadBody, UploadParams } from '../schemas.ts';
import { defineRoute, json, type Route } from '../route.ts';

/** How long a presigned upload URL (and so its pending journal entry) stays open. */
export const UPLOAD_URL_SECONDS = 900;

/**
 * The three-step upload of S3 mounts (shared/orchestrator/upload.ts): for bodies larger than
 * the API Lambda carries, or any client that would rather send its bytes to S3 directly.
 * Journaled like PUT /v1/files: the entry is pending from step 1 until completed, failed, cancelled
 * or expired (15 minutes after its URL, UPLOAD_GRACE_MS). DELETE frees the path of an upload that
 * will never complete (its presign failed, its answer was lost, its client gave up).
 */
export const uploadRoutes: Route[] = [
  defineRoute({
    method: 'POST',
    path: '/v1/uploads',
    scope: 'filestore:write',
    tag: 'files',
    summary: 'Start a presigned upload to an S3 mount: a pending journal entry and the URL to PUT the bytes to',
    body: UploadBody,
    responses: { 201: PresignedUpload, 400: ErrorBody, 404: ErrorBody, 409: ErrorBody },
    async handle({ body, principal, correlationId, deps }) {
      const opened = await deps.core.orchestrator.beginUpload(
        body.mountId,
        { path: body.path, sizeBytes: body.sizeBytes, sha256: checksumSha256(body.sha256), expectedVersion: body.ifMatch },
        { principal: principal.name, correlationId },
        UPLOAD_URL_SECONDS,
      );
      const completeUrl = `/v1/uploads/${opened.entryId}/complete`;
      return json(
        201,
        { uploadId: opened.entryId, journalEntryId: opened.entryId, method: 'PUT', url: opened.url, headers: opened.headers, expiresAt: opened.expiresAt.toISOString(), completeUrl },
        { location: completeUrl, 'cache-control': 'no-store' },
      );
    },
  }),
  defineRoute({
    method: 'POST',
    path: '/v1/uploads/:id/complete',
    scope: 'filestore:write',
    tag: 'files',
    summary: "Complete a presigned upload: the bytes' size (and sha256) checked, then committed as PUT /v1/files commits; again: the first result",
    params: UploadParams,
    responses: { 200: CommandResult, 404: ErrorBody, 409: ErrorBody, 410: ErrorBody, 422: ErrorBody, 503: ErrorBody },
    async handle({ params, principal, correlationId, deps }) {
      return json(200, await deps.core.orchestrator.completeUpload(params.id, { principal: principal.name, correlationId }));
    },
  }),
  defineRoute({
    method: 'DELETE',
    path: '/v1/uploads/:id',
    scope: 'filestore:write',
    tag: 'files',
    summary: 'Cancel a presigned upload (its starter or an admin): failed UPLOAD_CANCELLED, staged bytes removed, path free; again, or once ended: how it ended',
    params: UploadParams,
    responses: { 200: CancelledUpload, 404: ErrorBody, 503: ErrorBody },
    async handle({ params, principal, correlationId, deps }) {
      const asAdmin = principal.scopes.has('filestore:admin');
      return json(200, await deps.core.orchestrator.cancelUpload(params.id, { principal: principal.name, correlationId }, asAdmin), { 'cache-control': 'no-store' });
    },
  }),
];
