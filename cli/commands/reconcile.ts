import { Option, type Command } from 'commander';
import { FilestoreApiError, FilestoreClientError, FilestoreUnreachableError, type FilestoreClient, type JobStatus, type ReconcileJob } from '../../shared/client/index.ts';
import { counterProgress, formatTime, print, printFields, printJson, printTable, type JsonOption } from '../output.ts';
import { inCliWords } from '../errors.ts';
import { connect, parseId, parseTarget, showTarget, type Target } from '../target.ts';
import { COUNTS } from '../../reconcile-worker/attempt-line.ts';

/**
 * `--wait` asks the server to answer once the job has settled, or after LONG_POLL_MS as it is
 * then (GET /v1/reconcile/jobs/:id?waitMs=, a long poll): the wait ends as the job does, and
 * the progress counter moves at least this often.
 */
export const LONG_POLL_MS = 1_000;

/**
 * How long `--wait` waits before asking again a server that does not hold the question (one
 * older than long polls, or one stopping), `elapsedMs` into the wait: soon at first (most
 * jobs take well under a second, and a fixed half-second poll added up to 0.5 s to each),
 * then a twentieth of the time waited so far (a wait overshoots the job's end by at most ~5 %,
 * plus 25 ms), never more than POLL_MS. A poll is one small GET of one row.
 */
export function pollDelayMs(elapsedMs: number): number {
  return Math.min(POLL_MS, FIRST_POLL_MS + Math.max(0, elapsedMs) / 20);
}
const FIRST_POLL_MS = 25;
const POLL_MS = 500;
/** While Filestore does not answer (restarting, its database or Redis away), polls back off up to this… */
const MAX_POLL_MS = 5_000;
/** …and the wait gives up after this long without an answer (the job itself goes on). */
export const GIVE_UP_MS = 120_000;
const FINAL: ReadonlySet<JobStatus> = new Set(['succeeded', 'failed', 'cancelled']);

interface ReconcileOptions extends JsonOption {
  force?: boolean;
  hash?: boolean;
  recursive: boolean;
  wait?: boolean;
}

/** `filestore reconcile` (enqueue, optionally wait) and `filestore jobs` (look at jobs). */
export function registerReconcile(program: Command): void {
  program
    .command('reconcile')
    .description('check a path or subtree against storage and bring the catalogue back in line')
    .argument('<target>', 'MOUNT or MOUNT:PATH', parseTarget)
    .option('--hash', 'also hash file contents (slower; finds changes that keep size and mtime)')
    .option('--no-recursive', 'only the path itself, not what is below it')
    .option('--force', 'apply an audit even if it would mark more than FILESTORE_MAX_MISSING_RATIO of the mount MISSING (after checking the mount is really there)')
    .option('--wait', 'wait for the job to finish, showing progress, then print its counts')
    .option('--json', 'print the job as JSON')
    .action(async (target: Target, o: ReconcileOptions) => {
      const client = connect();
      let job = await client.reconcile({ mountId: target.mount, path: target.path, recursive: o.recursive, hash: o.hash === true, ...(o.force === true ? { force: true } : {}) });
      if (!o.wait) {
        if (o.json) return printJson(job);
        return print(`queued reconciliation job ${job.id} for ${showTarget(target)}; follow it with \`filestore jobs ${job.id} --wait\``);
      }
      job = await waitForJob(client, job);
      if (o.json) printJson(job);
      // The mount's key is what the user typed, unless that was its id: no listing to fetch.
      else printJob(job, UUID.test(target.mount) ? await mountKeys(client) : new Map([[job.mountId, target.mount]]));
      if (job.status !== 'succeeded') process.exitCode = 1;
    });

  program
    .command('jobs')
    .description('list reconciliation jobs (newest first), or show one')
    .argument('[id]', 'a job id', parseId)
    .option('--mount <key>', 'only jobs of this mount')
    .addOption(new Option('--status <status>', 'only jobs in this status').choices(['queued', 'running', 'succeeded', 'failed', 'cancelled']))
    .option('--limit <n>', 'at most this many jobs', parseId, 50)
    .option('--wait', 'with an id: wait for that job to finish, showing progress, then print it (exit 1 unless it succeeded)')
    .option('--json', 'print JSON')
    .action(async (id: number | undefined, o: JsonOption & { mount?: string; status?: JobStatus; limit: number; wait?: boolean }, cmd: Command) => {
      if (o.wait && id === undefined) cmd.error('--wait follows one job: give its id, e.g. `filestore jobs 42 --wait`', { exitCode: 2, code: 'filestore.usage' });
      const client = connect();
      if (id !== undefined) {
        let job = await client.getJob(id);
        if (o.wait) {
          job = await waitForJob(client, job);
          if (job.status !== 'succeeded') process.exitCode = 1;
        }
        return o.json ? printJson(job) : printJob(job, await mountKeys(client));
      }
      const jobs: ReconcileJob[] = [];
      for await (const job of client.iterateJobs({ mountId: o.mount, status: o.status, limit: Math.min(o.limit, 1000) })) {
        jobs.push(job);
        if (jobs.length >= o.limit) break;
      }
      if (o.json) return printJson(jobs);
      if (jobs.length === 0) return print('no reconciliation jobs');
      const keys = await mountKeys(client);
      printTable(
        ['id', 'mount', 'path', 'reason', 'status', 'checked', 'created', 'finished'],
        jobs.map((j) => [j.id, keys.get(j.mountId) ?? j.mountId, j.path || '/', j.reason, j.status, count(j, 'checked') ?? '-', formatTime(j.createdAt), formatTime(j.finishedAt)]),
      );
    });
}

/**
 * Asks for the job until it is final, each question held by the server until the job settles
 * (LONG_POLL_MS at most; a server that answers an open job at once is asked again after
 * pollDelayMs), with a counter of checked nodes on stderr. A job cancelled because another job for the same path took its
 * work over (error COALESCED, with that job's id) is followed to that job's end.
 * An answer that says "not now" (no connection, a 5xx such as 503 UNAVAILABLE) does not end
 * the wait: it is said once on stderr, polls back off, and the wait gives up only after
 * `giveUpMs` without an answer.
 */
export async function waitForJob(client: FilestoreClient, queued: ReconcileJob, o: { giveUpMs?: number } = {}): Promise<ReconcileJob> {
  const giveUpMs = o.giveUpMs ?? GIVE_UP_MS;
  const progress = counterProgress(`reconciling (job ${queued.id})`);
  let job = queued;
  const started = Date.now();
  let delay = 0; // the job was just queued: ask at once, the server holds the question
  let troubleSince: number | null = null;
  const followed = new Set<number>([queued.id]);
  try {
    while (!FINAL.has(job.status) || coalescedInto(job) !== null) {
      const takenOver = coalescedInto(job);
      if (takenOver !== null) {
        // Its work went to another job (maybe after hops): follow that one, polled as any, so
        // an answer that says "not now" is retried the same way.
        if (followed.has(takenOver)) break; // a loop of joins: show the job as it is
        followed.add(takenOver);
        process.stderr.write(`${process.stderr.isTTY ? '\n' : ''}filestore: job ${job.id} was joined to job ${takenOver}, which does its work; following job ${takenOver}\n`);
        job = { ...job, id: takenOver, status: 'queued', error: null };
      }
      if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
      const asked = Date.now();
      try {
        job = await client.getJob(job.id, { waitMs: LONG_POLL_MS });
      } catch (err) {
        if (!isTransient(err)) throw err;
        const now = Date.now();
        if (troubleSince === null) {
          troubleSince = now;
          const during = `${process.stderr.isTTY ? '\n' : ''}filestore: ${(err as Error).message}`;
          process.stderr.write(`${during}\nfilestore: still waiting for job ${job.id}; trying again for up to ${Math.round(giveUpMs / 1000)} s\n`);
        } else if (now - troubleSince >= giveUpMs) {
          throw new FilestoreClientError(
            `no answer about job ${job.id} for ${Math.round(giveUpMs / 1000)} s (${(err as Error).message}); stopped waiting, the job itself goes on: follow it with \`filestore jobs ${job.id} --wait\``,
          );
        }
        delay = Math.min(Math.max(delay, POLL_MS) * 2, MAX_POLL_MS);
        continue;
      }
      troubleSince = null;
      delay = nextDelayMs(job.status, Date.now() - asked, Date.now() - started);

      progress.update(count(job, 'checked') ?? 0);
    }
  } finally {
    progress.stop();
  }
  return job;
}

/**
 * The pause before the next question, given the job's `status` in an answer that took
 * `answeredInMs`, `elapsedMs` into the wait: none after a held question (the server waited
 * for the job) or a final one (a job joined to another is followed at once); a server that
 * answered an open job well before LONG_POLL_MS does not hold questions, and is asked at the
 * pace of pollDelayMs instead of in a tight loop.
 */
export function nextDelayMs(status: JobStatus, answeredInMs: number, elapsedMs: number): number {
  if (FINAL.has(status) || answeredInMs >= LONG_POLL_MS / 2) return 0;
  return pollDelayMs(elapsedMs);
}

/** The job that took over a cancelled one's work (error COALESCED with its id), or null. */
function coalescedInto(job: ReconcileJob): number | null {
  if (job.status !== 'cancelled') return null;
  const error = job.error as { code?: unknown; jobId?: unknown } | null | undefined;
  return error?.code === 'COALESCED' && typeof error.jobId === 'number' && error.jobId !== job.id ? error.jobId : null;
}

/** An answer that may well be different a little later: no connection, or a server error other than 501. */
function isTransient(err: unknown): boolean {
  if (err instanceof FilestoreUnreachableError) return true;
  return err instanceof FilestoreApiError && err.status >= 500 && err.status !== 501;
}

function count(job: ReconcileJob, key: string): number | undefined {
  const v = job.result?.[key];
  return typeof v === 'number' ? v : undefined;
}

/** Mount id → key, to show jobs by mount key (a removed mount's jobs went with it; an unknown id stays an id). */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

async function mountKeys(client: FilestoreClient): Promise<Map<string, string>> {
  return new Map((await client.listMounts()).items.map((m) => [m.id, m.key]));
}

function printJob(job: ReconcileJob, keys: Map<string, string>): void {
  const error = job.error as { code?: unknown; message?: unknown } | null;
  printFields([
    ['job', job.id],
    ['mount', keys.get(job.mountId) ?? job.mountId],
    ['path', job.path || '/'],
    ['reason', job.reason],
    ['status', job.status],
    ['attempts', job.attempts],
    ...COUNTS.map((k): [string, number | undefined] => [k, count(job, k)]),
    ...(Array.isArray(job.result?.skippedSample) ? [['skipped, e.g.', (job.result.skippedSample as string[]).map((p) => `"${p}"`).join(', ')] as [string, string]] : []),
    ['created', formatTime(job.createdAt)],
    ['started', formatTime(job.startedAt)],
    ['finished', formatTime(job.finishedAt)],
    ...(error
      ? [['error', typeof error.code === 'string' && typeof error.message === 'string' ? `${inCliWords(error.code, error.message)} (${error.code})` : JSON.stringify(error)] as [string, string]]
      : []),
  ]);
}
