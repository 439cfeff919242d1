/**
 * Reads a V8 `.cpuprofile` (written by `node --cpu-prof`) and says where the busy time went:
 * the functions with the most self time, the ones with the most inclusive time, and self time
 * grouped by where the code lives (a package, a Node.js internal module, a file of ours).
 * Idle time is left out, and so is every sample outside `windows` when they are given (the
 * measured windows of a bench, on the monotonic clock: process.hrtime in µs).
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  /** µs on the monotonic clock (CLOCK_MONOTONIC on Linux, as process.hrtime). */
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  busyMs: number;
  selfTop: Array<[string, number]>;
  inclusiveTop: Array<[string, number]>;
  byPlace: Array<[string, number]>;
}

const IDLE = new Set(['(idle)', '(program)', '(root)']);

/** `where` of a frame: a package, a Node.js internal module, a repository file, or V8 itself. */
function placeOf(url: string, repoRoot: string): string {
  if (url === '') return '(native / V8)';
  if (url.startsWith('node:')) return url.replace(/^node:(internal\/)?/, 'node:').replace(/\/.*$/, '');
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(path);
  if (pkg) return `npm:${pkg[1]}`;
  return path.startsWith(repoRoot) ? path.slice(repoRoot.length + 1) : path;
}

function frameName(f: CallFrame, repoRoot: string): string {
  // tsx's output keeps no line structure (every frame of a .ts file is on line 1), so lines only help elsewhere.
  const line = f.lineNumber > 0 ? `:${f.lineNumber + 1}` : '';
  return `${f.functionName || '(anonymous)'} ${placeOf(f.url, repoRoot)}${line}`;
}

/** Summarises one profile; `top` rows per table. */
export async function summariseCpuProfile(
  file: string,
  repoRoot: string,
  windows: Array<{ startUs: number; endUs: number }> = [],
  top = 15,
): Promise<ProfileSummary> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const byPlace = new Map<string, number>();
  let busyUs = 0;
  let at = profile.startTime;
  const inWindow = (t: number) => windows.length === 0 || windows.some((w) => t >= w.startUs && t < w.endUs);
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i] as number);
    // timeDeltas[i] is the time before sample i; attributing it to sample i is V8's convention too.
    const us = profile.timeDeltas[i] ?? 0;
    at += us;
    if (!node || IDLE.has(node.callFrame.functionName) || !inWindow(at)) continue;
    busyUs += us;
    const name = frameName(node.callFrame, repoRoot);
    self.set(name, (self.get(name) ?? 0) + us);
    const place = node.callFrame.functionName === '(garbage collector)' ? '(garbage collector)' : placeOf(node.callFrame.url, repoRoot);
    byPlace.set(place, (byPlace.get(place) ?? 0) + us);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const frame = byId.get(id)?.callFrame;
      if (!frame || IDLE.has(frame.functionName)) continue;
      const key = frameName(frame, repoRoot);
      if (seen.has(key)) continue; // recursion counts once per sample
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + us);
    }
  }
  const ranked = (m: Map<string, number>) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => [k, v / 1000] as [string, number]);
  return { busyMs: busyUs / 1000, selfTop: ranked(self), inclusiveTop: ranked(inclusive), byPlace: ranked(byPlace) };
}
