/**
 * A closed-loop HTTP/1.1 load generator: `connections` keep-alive sockets, each sending its next
 * request as soon as the last answer is complete, for a warm-up then a measured window.
 *
 * It writes one pre-built request and reads answers off raw `net` sockets instead of going
 * through `http.request` + `http.Agent`: on a 2-vCPU machine the generator shares the CPU with
 * the server, and node:http's client costs ~2–3× the CPU per request of a bare node:http server
 * answering it, so it would measure itself rather than the transport. Pipelining is never used.
 * Only answers with a Content-Length are understood (both servers of the API bench send one);
 * anything else counts as an error. `requestAt` builds each request instead (a PUT of a new
 * file per request: the write bench), and `check` judges each answer instead of `expectedBody`.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { machineBusySince, machineJiffies } from './proc.ts';

export interface LoadOptions {
  /** http://host:port/path?query */
  url: string;
  headers: Record<string, string>;
  connections: number;
  warmupMs: number;
  durationMs: number;
  /** Every answer must be a 200 with exactly these bytes; anything else is an error (unless `check` is given). */
  expectedBody?: Buffer | undefined;
  /**
   * The bytes of the n-th request (0, 1, …, across every connection): a PUT with its body, to a
   * path of its own. Default: a GET of `url` with `headers`, the same bytes every time.
   */
  requestAt?: ((n: number) => Buffer) | undefined;
  /** Judges an answer instead of `expectedBody`: null if it is right, else what is wrong. */
  check?: ((status: number, body: Buffer) => string | null) | undefined;
  /**
   * CPU seconds other processes (the server, Redis…) have used so far, by name; each is sampled
   * at the start and the end of the measured window.
   */
  cpuProbes?: Record<string, () => number> | undefined;
}

export interface LoadResult {
  /** Answers completed inside the measured window. */
  requests: number;
  seconds: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Non-200 answers, wrong bodies, unparseable answers, socket errors and timeouts (warm-up included). */
  errors: number;
  /** The first few errors, for the report. */
  errorSamples: string[];
  /** CPU seconds of the generator (this process) in the measured window. */
  generatorCpuSeconds: number;
  /** CPU seconds of each of `cpuProbes` in the measured window (NaN where unknown). */
  probedCpuSeconds: Record<string, number>;
  /** Share of the machine's CPU time that was busy in the measured window; NaN off Linux. */
  machineBusy: number;
  /** The measured window on the monotonic clock (process.hrtime, µs): V8 CPU profiles use the same clock. */
  window: { startUs: number; endUs: number };
}

const HEADER_END = Buffer.from('\r\n\r\n');
const RESPONSE_TIMEOUT_MS = 10_000;
const MAX_ERRORS = 1_000;
const MAX_SAMPLES = 5;

/** Latencies in a growable Float64Array, so recording one costs no allocation. */
class Latencies {
  private values = new Float64Array(1 << 16);
  length = 0;

  push(ms: number): void {
    if (this.length === this.values.length) {
      const bigger = new Float64Array(this.values.length * 2);
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values[this.length++] = ms;
  }

  /** Ascending copy of what was recorded. */
  sorted(): Float64Array {
    return this.values.slice(0, this.length).sort();
  }
}

/** Nearest-rank percentile of ascending values (p in 0..100). */
function percentileOf(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

export function buildRequest(url: URL, headers: Record<string, string>, method = 'GET', body?: Buffer): Buffer {
  const lines = [`${method} ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  if (body) lines.push(`Content-Length: ${body.length}`);
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1');
  return body ? Buffer.concat([head, body]) : head;
}

/** Runs the load and resolves once every connection has finished its last request. */
export async function runHttpLoad(o: LoadOptions): Promise<LoadResult> {
  const url = new URL(o.url);
  if (url.protocol !== 'http:') throw new Error(`http-load speaks plain http only, not ${url.protocol}`);
  const port = Number(url.port || 80);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const fixed = o.requestAt ? null : buildRequest(url, o.headers);
  let sent = 0;
  const nextRequest = () => fixed ?? (o.requestAt as (n: number) => Buffer)(sent++);
  const latencies = new Latencies();
  const errorSamples: string[] = [];
  let errors = 0;
  let aborted = false;

  const started = performance.now();
  const measureStart = started + o.warmupMs;
  const measureEnd = measureStart + o.durationMs;

  // CPU and machine counters at the edges of the measured window (a timer late by the time
  // of one callback on this loop, microseconds to a millisecond).
  let cpu0: NodeJS.CpuUsage = process.cpuUsage();
  const probe = () => Object.fromEntries(Object.entries(o.cpuProbes ?? {}).map(([name, cpu]) => [name, cpu()]));
  let probed0: Record<string, number> = {};
  let jiffies0 = machineJiffies();
  const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);
  const measured = { startUs: monotonicUs(), endUs: Number.NaN };
  const startTimer = setTimeout(() => {
    measured.startUs = monotonicUs();
    cpu0 = process.cpuUsage();
    probed0 = probe();
    jiffies0 = machineJiffies();
  }, o.warmupMs);
  type Edges = { cpu: NodeJS.CpuUsage; probed: Record<string, number>; busy: number };
  let ended: Edges | null = null;
  const sampleEnd = () => {
    if (ended) return;
    measured.endUs = monotonicUs();
    const probed = probe();
    for (const name of Object.keys(probed)) probed[name] = (probed[name] as number) - (probed0[name] ?? Number.NaN);
    ended = { cpu: process.cpuUsage(cpu0), probed, busy: machineBusySince(jiffies0) };
  };
  const endTimer = setTimeout(sampleEnd, o.warmupMs + o.durationMs);

  const fail = (what: string) => {
    errors++;
    if (errorSamples.length < MAX_SAMPLES) errorSamples.push(what);
    if (errors >= MAX_ERRORS) aborted = true;
  };

  /** One connection's loop; resolves when the window is over (or the run is aborted). */
  const connection = () =>
    new Promise<void>((resolve) => {
      let socket: net.Socket;
      let buffered: Buffer | null = null;
      let sentAt = 0;
      let done = false;

      const finish = () => {
        if (done) return;
        done = true;
        socket.removeAllListeners('close');
        socket.destroy();
        resolve();
      };
      const send = () => {
        if (aborted || performance.now() >= measureEnd) return finish();
        sentAt = performance.now();
        socket.write(nextRequest());
      };
      const open = () => {
        buffered = null;
        socket = net.connect({ host, port, noDelay: true });
        socket.setTimeout(RESPONSE_TIMEOUT_MS, () => {
          fail(`no answer within ${RESPONSE_TIMEOUT_MS} ms`);
          socket.destroy();
        });
        socket.on('connect', send);
        socket.on('data', onData);
        socket.on('error', (err) => fail(`socket: ${err.message}`));
        socket.on('close', () => {
          if (done) return;
          if (aborted || performance.now() >= measureEnd) return finish();
          open(); // the server closed the connection: count it (above, if it was an error) and reconnect
        });
      };
      const onData = (chunk: Buffer) => {
        buffered = buffered === null ? chunk : Buffer.concat([buffered, chunk]);
        const headerEnd = buffered.indexOf(HEADER_END);
        if (headerEnd < 0) return;
        const head = buffered.toString('latin1', 0, headerEnd);
        const length = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
        if (!length) {
          fail(`an answer without Content-Length: ${head.split('\r\n')[0]}`);
          socket.destroy();
          return;
        }
        const bodyStart = headerEnd + HEADER_END.length;
        const bodyEnd = bodyStart + Number(length[1]);
        if (buffered.length < bodyEnd) return;
        const now = performance.now();
        const status = Number(head.slice(9, 12));
        const body = buffered.subarray(bodyStart, bodyEnd);
        const extra = buffered.length - bodyEnd;
        buffered = null;
        const wrong = o.check ? o.check(status, body) : null;
        if (o.check) {
          if (wrong !== null) fail(wrong);
          else if (now >= measureStart && now < measureEnd) latencies.push(now - sentAt);
        } else if (status !== 200) fail(`HTTP ${status}: ${body.toString('utf8', 0, Math.min(body.length, 300))}`);
        else if (o.expectedBody && !body.equals(o.expectedBody)) fail(`HTTP 200 with an unexpected body: ${body.toString('utf8', 0, Math.min(body.length, 300))}`);
        else if (now >= measureStart && now < measureEnd) latencies.push(now - sentAt);
        if (extra > 0) {
          fail(`${extra} bytes after the answer`);
          socket.destroy();
        } else if (/\r\nconnection:[ \t]*close/i.test(head)) {
          socket.end(); // 'close' reconnects
        } else {
          send();
        }
      };
      open();
    });

  await Promise.all(Array.from({ length: o.connections }, connection));
  clearTimeout(startTimer);
  clearTimeout(endTimer);
  sampleEnd(); // the last answer can beat the timer
  if (aborted) throw new Error(`http-load: gave up after ${errors} errors; first: ${errorSamples.join(' | ')}`);
  const edges = ended as Edges | null;
  const seconds = o.durationMs / 1000;
  const sorted = latencies.sorted();
  return {
    requests: sorted.length,
    seconds,
    requestsPerSecond: sorted.length / seconds,
    p50Ms: percentileOf(sorted, 50),
    p99Ms: percentileOf(sorted, 99),
    maxMs: sorted.length > 0 ? (sorted[sorted.length - 1] as number) : Number.NaN,
    errors,
    errorSamples,
    generatorCpuSeconds: edges ? (edges.cpu.user + edges.cpu.system) / 1e6 : Number.NaN,
    probedCpuSeconds: edges ? edges.probed : {},
    machineBusy: edges ? edges.busy : Number.NaN,
    window: measured,
  };
}
