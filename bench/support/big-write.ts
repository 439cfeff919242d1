import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { createFilestore } from '../../shared/runtime.ts';
import { MiB } from './measure.ts';

/** The argument that turns bench/commands.ts into the child process of the streamed write. */
export const CHILD_FLAG = '--child-big-write';
const RESULT_MARKER = 'BENCH_RESULT ';

export interface BigWriteResult {
  bytes: number;
  /** Time inside orchestrator.writeFile (journal, stream, hash, fsync, rename, commit). */
  writeMs: number;
  /** Child wall time from spawn to exit (process start, tsx, createFilestore, close included). */
  processMs: number;
  /** RSS once createFilestore returned, before the write started (KiB). */
  rssBeforeWriteKB: number;
  /** process.resourceUsage().maxRSS at the child's end (KiB). */
  maxRssKB: number;
  sha256: string;
}

export interface CpResult {
  cpMs: number;
  /** cp, then `sync <target>` (fsync of the copy), timed from the start of cp. */
  cpSyncMs: number;
  /** Peak RSS of cp from /usr/bin/time, when it is installed. */
  maxRssKB: number | null;
}

/**
 * Writes `mib` MiB of a deterministic, incompressible-looking pattern (a xorshift block, each
 * MiB stamped with its index so no two blocks are equal), fsyncs it and returns its sha256.
 */
export async function createSourceFile(abs: string, mib: number): Promise<string> {
  const block = Buffer.alloc(MiB);
  const words = new Uint32Array(block.buffer, block.byteOffset, MiB / 4);
  let x = 0x9e3779b9;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  const hash = createHash('sha256');
  const fh = await open(abs, 'wx');
  try {
    for (let i = 0; i < mib; i++) {
      block.writeBigUInt64BE(BigInt(i), 0);
      hash.update(block);
      let offset = 0;
      while (offset < block.length) offset += (await fh.write(block, offset, block.length - offset)).bytesWritten;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return hash.digest('hex');
}

/** Runs a command to completion; rejects on a non-zero exit. */
export function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${command} ${args.join(' ')} exited with ${code}`))));
  });
}

/** Flushes every dirty page of the machine, so one measurement does not pay for the last one's writeback. */
export const syncAll = () => run('sync', []);

/** `cp src dst`, then `sync dst`; both timed from the start of cp. */
export async function timeCp(src: string, dst: string, scratchDir: string): Promise<CpResult> {
  const gnuTime = existsSync('/usr/bin/time');
  const rssFile = `${scratchDir}/cp-rss.txt`;
  const t0 = performance.now();
  if (gnuTime) await run('/usr/bin/time', ['-f', '%M', '-o', rssFile, 'cp', src, dst]);
  else await run('cp', [src, dst]);
  const t1 = performance.now();
  await run('sync', [dst]);
  const t2 = performance.now();
  const maxRssKB = gnuTime ? Number((await readFile(rssFile, 'utf8')).trim().split('\n').pop()) : null;
  return { cpMs: t1 - t0, cpSyncMs: t2 - t0, maxRssKB: Number.isFinite(maxRssKB) ? maxRssKB : null };
}

export interface ChildConfig {
  databaseUrl: string;
  redisUrl: string;
}

/**
 * Spawns this script as a child that streams `src` into `mountKey` through the orchestrator,
 * so that its peak RSS is the RSS of a process doing nothing else (pool, bus, relay included).
 */
export async function spawnBigWrite(script: string, src: string, mountKey: string, config: ChildConfig): Promise<BigWriteResult> {
  const t0 = performance.now();
  const out = await run(process.execPath, [
    '--import',
    import.meta.resolve('tsx'),
    script,
    CHILD_FLAG,
    src,
    mountKey,
    config.databaseUrl,
    config.redisUrl,
  ]);
  const processMs = performance.now() - t0;
  const line = out.split('\n').find((l) => l.startsWith(RESULT_MARKER));
  if (!line) throw new Error(`the big-write child printed no result:\n${out}`);
  return { ...(JSON.parse(line.slice(RESULT_MARKER.length)) as Omit<BigWriteResult, 'processMs'>), processMs };
}

/** The child's side: createFilestore, one writeFile from a file read stream, report, exit. */
export async function runBigWriteChild(args: string[]): Promise<void> {
  const [src, mountKey, databaseUrl, redisUrl] = args;
  if (!src || !mountKey || !databaseUrl || !redisUrl) {
    throw new Error(`usage: ${CHILD_FLAG} <src> <mountKey> <databaseUrl> <redisUrl>`);
  }
  const core = await createFilestore({
    databaseUrl,
    redisUrl,
    migrate: true,
    log: (l) => process.stderr.write(`[child] ${l}\n`),
  });
  try {
    const rssBeforeWriteKB = Math.round(process.memoryUsage().rss / 1024);
    const bytes = (await stat(src)).size;
    const t0 = performance.now();
    const result = await core.orchestrator.writeFile(mountKey, { path: 'big/source.bin' }, createReadStream(src));
    const writeMs = performance.now() - t0;
    const sha256 = String(result.node.sha256);
    await core.close();
    const report: Omit<BigWriteResult, 'processMs'> = {
      bytes,
      writeMs,
      rssBeforeWriteKB,
      maxRssKB: process.resourceUsage().maxRSS,
      sha256,
    };
    process.stdout.write(`${RESULT_MARKER}${JSON.stringify(report)}\n`);
  } catch (err) {
    await core.close().catch(() => undefined);
    throw err;
  }
}
