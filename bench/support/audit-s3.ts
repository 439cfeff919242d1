/**
 * Part 3 of the audit bench: an S3 mount of small objects on fauxqs (in a child process),
 * discovered once, then unchanged audits alternating with `rclone lsjson -R` against the same
 * server, from one run.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createMount } from '../../shared/catalogue/mounts.ts';
import { ourAudit, type BenchContext, type OurAudit } from './audit-local.ts';
import { captureCommand, countLsjson, fauxRemoteEnv, rcloneLsjson, timeCommand, type Command, type PeerRun } from './audit-peers.ts';
import type { TreeShape } from './audit-trees.ts';
import { spawnFauxqs, uploadClient, uploadObjects } from './fauxqs-child.ts';
import type { Throughput } from './measure.ts';
import { alternateRounds } from './rounds.ts';

export const S3_PREFIX = 'bench/';

/** A run with the S3 server's CPU seconds meanwhile. */
export type WithServerCpu<T> = T & { serverCpuSeconds: number };

export interface S3Peer {
  name: string;
  command: Command;
}

export interface S3Result {
  shape: TreeShape;
  keys: number;
  endpoint: string;
  bucket: string;
  upload: Throughput;
  initial: WithServerCpu<OurAudit>;
  /** `rclone lsjson -R` as the acceptance names it: once, output captured (it HEADs every object). */
  literal: { name: string; run: WithServerCpu<PeerRun> };
  /** List-only rclone variants, in rounds. */
  peers: S3Peer[];
  ours: Array<WithServerCpu<OurAudit>>;
  /** Runs of each peer, by name. */
  peerRuns: Map<string, Array<WithServerCpu<PeerRun>>>;
}

function checkListing(ctx: BenchContext, name: string, out: string, files: number, dirs: number): void {
  const listed = countLsjson(out);
  if (listed.files !== files || listed.dirs !== dirs) {
    ctx.invalid.push(`${name} listed ${listed.files} objects and ${listed.dirs} directories; the bucket has ${files} and ${dirs}`);
  }
}

const dirName = (d: number) => `d${String(d).padStart(3, '0')}`;
const fileName = (f: number) => `f${String(f).padStart(5, '0')}.txt`;

export async function s3AuditPart(ctx: BenchContext, script: string, shape: TreeShape, uploadConcurrency: number): Promise<S3Result> {
  const bucket = `bench-audit-${randomBytes(4).toString('hex')}`;
  ctx.progress('starting fauxqs in a child process…');
  const server = await spawnFauxqs(script, bucket);
  try {
    const keys: string[] = [];
    for (let d = 0; d < shape.dirs; d++) for (let f = 0; f < shape.filesPerDir; f++) keys.push(`${S3_PREFIX}${dirName(d)}/${fileName(f)}`);
    ctx.progress(`uploading ${keys.length} objects of 100 B – 4 KB to ${server.endpoint}/${bucket}/${S3_PREFIX} (${uploadConcurrency} in flight)…`);
    const client = uploadClient(server.endpoint, uploadConcurrency);
    const upload = await uploadObjects(client, bucket, keys, uploadConcurrency).finally(() => client.destroy());

    const mount = await createMount(ctx.core.pool, {
      key: `bench-audit-s3-${randomUUID().slice(0, 8)}`,
      kind: 's3',
      bucket,
      prefix: S3_PREFIX,
      endpoint: server.endpoint,
      region: 'us-east-1',
    });
    ctx.mounts.push(mount.id);
    const entries = keys.length + shape.dirs;
    const withServerCpu = async <T>(f: () => Promise<T>): Promise<WithServerCpu<T>> => {
      const c0 = server.cpuSeconds();
      const out = await f();
      return { ...out, serverCpuSeconds: server.cpuSeconds() - c0 };
    };
    ctx.progress(`initial audit of the untracked bucket (discovers ${entries} nodes)…`);
    const initial = await withServerCpu(() => ourAudit(ctx, mount.id, 'S3 initial audit', { discovered: entries, checked: entries + 1, missing: 0, updated: 0 }));

    const env = fauxRemoteEnv(server.endpoint);
    const target = `faux:${bucket}/${S3_PREFIX.replace(/\/$/, '')}`;
    // `rclone lsjson -R` on S3 sends a HEAD per object (the MIME type and rclone's own mtime
    // live in object metadata, not in listings); with --no-mimetype --use-server-modtime it
    // only lists, and reports what our audit reads from the listing (key, size, LastModified).
    const literal: S3Peer = { name: 'rclone lsjson -R', command: rcloneLsjson(target, [], env) };
    const peers: S3Peer[] = [
      { name: 'rclone lsjson -R --no-mimetype --use-server-modtime', command: rcloneLsjson(target, ['--no-mimetype', '--use-server-modtime'], env) },
      { name: 'rclone lsjson -R --no-mimetype --use-server-modtime --fast-list', command: rcloneLsjson(target, ['--no-mimetype', '--use-server-modtime', '--fast-list'], env) },
    ];
    for (const p of peers) checkListing(ctx, p.name, await captureCommand(p.command), keys.length, shape.dirs);
    // The literal command takes a request per object: it runs once, its output counted.
    ctx.progress(`${literal.name} once (a HEAD per object)…`);
    const literalRun = await withServerCpu(async () => {
      const t0 = performance.now();
      const out = await captureCommand(literal.command);
      const ms = performance.now() - t0;
      checkListing(ctx, literal.name, out, keys.length, shape.dirs);
      return { ms, maxRssKB: null } as PeerRun;
    });

    ctx.progress(`${ctx.rounds} rounds on the unchanged bucket: our audit and the list-only rclone variants (alternating)…`);
    const runs = await alternateRounds<WithServerCpu<OurAudit | PeerRun>>(
      ctx.rounds,
      [
        {
          name: 'ours',
          run: () => withServerCpu(() => ourAudit(ctx, mount.id, 'S3 unchanged audit', { unchanged: entries + 1, updated: 0, discovered: 0, missing: 0 })),
        },
        ...peers.map((p) => ({ name: p.name, run: () => withServerCpu(() => timeCommand(p.command)) })),
      ],
      { progress: ctx.progress },
    );
    const peerRuns = new Map(peers.map((p) => [p.name, runs.get(p.name) as Array<WithServerCpu<PeerRun>>]));
    return {
      shape,
      keys: keys.length,
      endpoint: server.endpoint,
      bucket,
      upload,
      initial,
      literal: { name: literal.name, run: literalRun },
      peers,
      ours: runs.get('ours') as Array<WithServerCpu<OurAudit>>,
      peerRuns,
    };
  } finally {
    const t0 = performance.now();
    await server.stop(); // the bucket lived in the server's memory: gone with it
    ctx.progress(`stopped fauxqs (bucket ${bucket} gone with it) in ${Math.round(performance.now() - t0)} ms`);
  }
}
