/**
 * Issue 16, item 7: the server's messages the CLI cannot cheaply provoke end to end (an agent
 * away, a crash, a mass-MISSING audit, an expired resume point, a body that stalled) are said in
 * the CLI's words too. The messages are the server's own where its code exports them, else
 * copies of its text (tests/cli-language.test.ts runs the CLI for the others).
 */
import { describe, expect, it } from 'vitest';
import { backendMessage } from '../shared/backends/errors.ts';
import { MassMissingError } from '../shared/reconcile/errors.ts';
import { FilestoreCommandPendingError, FilestoreUnreachableError } from '../shared/client/index.ts';
import { describeError, formatError, inCliWords } from '../cli/errors.ts';

const API_WORDS = /pass (parents|recursive|overwrite|mountId)|\/v1\/|rootPath|"check"|"agentId"|Idempotency-Key|Last-Event-ID/;
const noClient = () => {
  throw new Error('not used');
};

describe('inCliWords', () => {
  it.each([
    ['DIRECTORY_NOT_EMPTY', backendMessage('DIRECTORY_NOT_EMPTY', 'docs') as string, '"docs" is a directory that is not empty; add -r (--recursive) to delete it with its contents'],
    ['ALREADY_EXISTS', backendMessage('ALREADY_EXISTS', 'docs') as string, '"docs" already exists; add --overwrite to replace it'],
    [
      'AGENT_UNAVAILABLE',
      'local mount "nas" is assigned to no agent, and this process has no local disks; assign it to the agent on its host (PATCH /v1/mounts/nas with {"agentId": …})',
      'local mount "nas" is assigned to no agent, and this process has no local disks; assign it to the agent on its host: `filestore mounts set nas --agent AGENT_ID`',
    ],
    [
      'AGENT_UNAVAILABLE',
      'agent "a" is not running; it checks the root of a mount it is to own: start it, or register it without the check (CLI --no-check, API "check": false)',
      'agent "a" is not running; it checks the root of a mount it is to own: start it, or register it without the check (--no-check)',
    ],
    [
      'MOUNT_UNREACHABLE',
      's3://b/ cannot be reached: the bucket does not exist; pass --no-check (API: "check": false) to register it anyway',
      's3://b/ cannot be reached: the bucket does not exist; add --no-check to register it anyway',
    ],
    [
      'INTERRUPTED',
      'this process is shutting down; send the command again with the same Idempotency-Key for its result',
      'this process is shutting down; look (`filestore stat`) whether it took effect before running it again',
    ],
    [
      'REQUEST_TIMEOUT',
      'no bytes of the request body arrived for 30000 ms; send the request again (with the same Idempotency-Key)',
      'no bytes of the request body arrived for 30000 ms; run the command again',
    ],
    [
      'RESUME_POINT_EXPIRED',
      'cannot resume after event 4: the events up to 9 are no longer kept (the outbox keeps published events for FILESTORE_OUTBOX_RETENTION). Open the stream without Last-Event-ID to start from now, and catch up on what changed meanwhile by listing again (GET /v1/nodes) or reconciling (POST /v1/reconcile).',
      'cannot resume after event 4: the events up to 9 are no longer kept (the outbox keeps published events for FILESTORE_OUTBOX_RETENTION)',
    ],
    [
      'CONFIG_ERROR',
      'the reply … does not verify. Whether the command ran is unknown: look for it in GET /v1/journal, or send it again with the same Idempotency-Key',
      'the reply … does not verify. Whether the command ran is unknown: look for it with `filestore journal --mount MOUNT` before running it again',
    ],
    [
      'NOT_IMPLEMENTED',
      'event streams are not served by the API Lambda; subscribe to GET /v1/events/stream on an agent',
      'event streams are not served by the API Lambda; run `filestore events tail` with FILESTORE_URL set to an agent',
    ],
    [
      'PAYLOAD_TOO_LARGE',
      "this API endpoint carries at most 6000000 bytes of a file per request: send it to the owning agent's API",
      'this API endpoint carries at most 6000000 bytes of a file per request: set FILESTORE_URL to the owning agent (its FILESTORE_AGENT_URL) and put it again',
    ],
    [
      'VALIDATION_ERROR',
      'body.bucket: Too small: expected string to have >=3 characters; body.endpoint: Invalid URL',
      '--bucket: Too small: expected string to have >=3 characters; --endpoint: Invalid URL',
    ],
  ])('%s: %s', (code, server, cli) => {
    expect(inCliWords(code, server)).toBe(cli);
    expect(inCliWords(code, server)).not.toMatch(API_WORDS);
  });

  it('a mass-MISSING audit stop names reconcile --force', () => {
    const said = inCliWords('STORAGE_ERROR', new MassMissingError(60, 100, 0.5).message);
    expect(said).toContain('then run `filestore reconcile MOUNT --force` if those files are really gone (or raise FILESTORE_MAX_MISSING_RATIO)');
  });

  it('a message it does not know passes unchanged', () => {
    expect(inCliWords('NOT_FOUND', 'pass parents, said differently')).toBe('pass parents, said differently');
  });
});

describe('describeError', () => {
  it('a command still running on an agent names `filestore journal`, not the API (COMMAND_PENDING)', async () => {
    const err = new FilestoreCommandPendingError({
      status: 'accepted',
      agentId: 'host-a',
      idempotencyKey: 'k1',
      journalEntry: { id: 42, mountId: 'm-uuid' } as never,
      message: 'agent "host-a" is still running the command (journal entry 42); follow GET /v1/journal?mountId=m-uuid, or send it again with Idempotency-Key k1 for its result',
    });
    const said = await describeError(err, ['mkdir', 'nas:x'], noClient);
    expect(formatError(said, false)).toBe('filestore: agent "host-a" is still running the command (journal entry 42); follow it with `filestore journal --mount m-uuid`');
    expect(JSON.parse(formatError(said, true))).toEqual({
      error: { code: 'COMMAND_PENDING', message: said.message, details: { agentId: 'host-a', idempotencyKey: 'k1', journalEntryId: 42 } },
    });
  });

  it('a connection lost mid-request says to look before running it again, not to resend an Idempotency-Key', async () => {
    const said = await describeError(new FilestoreUnreachableError('http://h:4300', 'ECONNRESET', null), ['rm', 'a:b'], noClient);
    expect(said.message).toContain('the command may or may not have been applied: look (`filestore stat`, `filestore ls`) before running it again');
    expect(said.message).not.toMatch(API_WORDS);
  });

  it('a taken port names PORT and FILESTORE_HOST', async () => {
    const said = await describeError(Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE', port: 4300, address: '127.0.0.1' }), ['agent'], noClient);
    expect(formatError(said, false)).toBe('filestore: port 4300 is in use on 127.0.0.1: set PORT (or FILESTORE_HOST)');
  });
});
