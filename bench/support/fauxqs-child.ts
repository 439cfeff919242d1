/**
 * The S3 server of the audit bench: fauxqs (with the tests' S3 key order, tests/support/s3.ts)
 * in a child process of its own, so that our audit and rclone both reach it over TCP and
 * neither shares its event loop. startS3 takes a free port; the child prints it, and rclone is
 * pointed at it through RCLONE_CONFIG_FAUX_ENDPOINT.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startS3 } from '../../tests/support/s3.ts';
import { runConcurrent, type Throughput } from './measure.ts';
import { processCpuSeconds } from './proc.ts';

export const FAUXQS_CHILD_FLAG = '--child-fauxqs';
const READY_MARKER = 'BENCH_FAUXQS_READY ';

export interface FauxqsChild {
  endpoint: string;
  pid: number;
  /** CPU seconds the server has used so far (NaN off Linux). */
  cpuSeconds(): number;
  stop(): Promise<void>;
}

/** Starts the server child with `bucket` created, and resolves once it listens. */
export async function spawnFauxqs(script: string, bucket: string): Promise<FauxqsChild> {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), script, FAUXQS_CHILD_FLAG, bucket], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const endpoint = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`fauxqs did not start within 60 s:\n${out}`));
    }, 60_000);
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`fauxqs exited with ${code} before listening:\n${out}`));
    };
    child.once('exit', onExit);
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith(READY_MARKER));
      if (!line) return;
      clearTimeout(timer);
      child.off('exit', onExit);
      child.stdout?.removeAllListeners('data').resume();
      resolve(line.slice(READY_MARKER.length).trim());
    });
  });
  return fauxqsHandle(child, endpoint, exited);
}

function fauxqsHandle(child: ChildProcess, endpoint: string, exited: Promise<void>): FauxqsChild {
  const pid = child.pid as number;
  return {
    endpoint,
    pid,
    cpuSeconds: () => processCpuSeconds(pid),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The child's side (argv after the flag: the bucket to create). */
export async function runFauxqsChild(args: string[]): Promise<void> {
  const [bucket] = args;
  if (!bucket) throw new Error(`usage: ${FAUXQS_CHILD_FLAG} <bucket>`);
  const s3 = await startS3();
  await s3.createBucket(bucket);
  process.once('SIGTERM', () => {
    s3.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
  process.stdout.write(`${READY_MARKER}${s3.endpoint}\n`);
}

/** A client for uploading the bench's objects: path style, test credentials, `sockets` connections. */
export function uploadClient(endpoint: string, sockets: number): S3Client {
  return new S3Client({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: { httpAgent: new http.Agent({ keepAlive: true, maxSockets: sockets }) },
  });
}

/** PUTs `keys` (100 B – 4 KB bodies) with `concurrency` requests in flight. */
export async function uploadObjects(client: S3Client, bucket: string, keys: string[], concurrency: number): Promise<Throughput> {
  const block = Buffer.alloc(4096, 0x62);
  return runConcurrent(keys.length, concurrency, async (i) => {
    const size = 100 + ((Math.imul(i, 2654435761) >>> 0) % 3997);
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: keys[i] as string, Body: block.subarray(0, size) }));
  });
}
