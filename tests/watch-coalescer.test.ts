import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Coalescer, netChange } from '../agent/watch/coalescer.ts';
import { EnqueueError, enqueuePlanned, planJobs } from '../shared/reconcile/job-plan.ts';
import type { ReconcileRequest } from '../shared/reconcile/types.ts';
import type { CoalescedBatch, WatchEvent } from '../agent/watch/types.ts';

const ev = (type: WatchEvent['type'], path: string): WatchEvent => ({ type, path });

function harness(o: { debounceMs?: number; maxWaitMs?: number; maxPendingPaths?: number; maxRescanDirs?: number } = {}) {
  const batches: CoalescedBatch[] = [];
  const c: Coalescer = new Coalescer({
    debounceMs: o.debounceMs ?? 200,
    maxWaitMs: o.maxWaitMs,
    maxPendingPaths: o.maxPendingPaths,
    maxRescanDirs: o.maxRescanDirs,
    onDue: () => {
      const b = c.take();
      if (b) batches.push(b);
    },
  });
  return { c, batches };
}

describe('coalescer', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  it('a flurry of events on one path is one signal, after the tree has been quiet for the debounce', () => {
    const { c, batches } = harness();
    for (let i = 0; i < 50; i++) {
      c.push([ev('update', 'log.txt')]);
      vi.advanceTimersByTime(10);
    }
    expect(batches).toHaveLength(0);
    vi.advanceTimersByTime(200);
    expect(batches).toHaveLength(1);
    expect([...(batches[0] as CoalescedBatch).changes]).toEqual([['log.txt', 'changed']]);
  });

  it("an editor's atomic save (delete + create of the target) is one change; its temp files are nothing", () => {
    const { c, batches } = harness();
    c.push([ev('create', '4913'), ev('delete', '4913')]);
    c.push([ev('create', '.x.swp'), ev('update', '.x.swp')]);
    c.push([ev('create', 'x.tmp'), ev('update', 'x.tmp'), ev('delete', 'x.tmp'), ev('delete', 'x'), ev('create', 'x')]);
    c.push([ev('delete', '.x.swp')]);
    vi.advanceTimersByTime(200);
    expect([...(batches[0] as CoalescedBatch).changes]).toEqual([['x', 'changed']]);
  });

  it('a tree that never goes quiet still gets a batch every maxWaitMs', () => {
    const { c, batches } = harness({ debounceMs: 100, maxWaitMs: 1_000 });
    for (let i = 0; i < 150; i++) {
      c.push([ev('create', `f${i}`)]);
      vi.advanceTimersByTime(20);
    }
    expect(batches.length).toBeGreaterThanOrEqual(2);
    vi.advanceTimersByTime(100);
    expect(batches.flatMap((b) => [...b.changes.keys()])).toHaveLength(150);
  });

  it('memory is bounded: past maxPendingPaths the paths collapse into rescans of their directories, and later events below them are absorbed', () => {
    const { c, batches } = harness({ maxPendingPaths: 100, maxRescanDirs: 4 });
    for (let i = 0; i < 80; i++) c.push([ev('create', `a/b/f${i}`)]);
    for (let i = 0; i < 30; i++) c.push([ev('create', `c/f${i}`)]);
    expect(c.size).toBe(2);
    c.push([ev('update', 'a/b/f1'), ev('create', 'c/new')]);
    c.push([ev('update', 'top.txt')]);
    expect(c.size).toBe(3);
    vi.advanceTimersByTime(200);
    const b = batches[0] as CoalescedBatch;
    expect(b.rescans.sort()).toEqual(['a/b', 'c']);
    expect([...b.changes.keys()]).toEqual(['top.txt']);
  });

  it('a collapse climbs the tree until few enough directories remain (at worst the mount root)', () => {
    const { c, batches } = harness({ maxPendingPaths: 50, maxRescanDirs: 3 });
    for (let d = 0; d < 30; d++) c.push([ev('create', `p${d % 2}/d${d}/f1`), ev('create', `p${d % 2}/d${d}/f2`)]);
    vi.advanceTimersByTime(200);
    expect((batches[0] as CoalescedBatch).rescans.sort()).toEqual(['p0', 'p1']);
    for (let d = 0; d < 60; d++) c.push([ev('create', `q${d}/f`)]);
    vi.advanceTimersByTime(200);
    expect((batches[1] as CoalescedBatch).rescans).toEqual(['']);
  });

  it('requeued paths (held by a command) come back after their delay, as changes', () => {
    const { c, batches } = harness();
    c.requeue(['busy.txt'], 1_000);
    vi.advanceTimersByTime(999);
    expect(batches).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect([...(batches[0] as CoalescedBatch).changes]).toEqual([['busy.txt', 'changed']]);
  });

  it('a batch says when the watcher last reported each path; paths handed back by the sink carry no such time', () => {
    const { c, batches } = harness({ debounceMs: 100 });
    c.push([ev('create', 'a')]);
    vi.advanceTimersByTime(50);
    const before = performance.now();
    c.push([ev('update', 'a'), ev('create', 'b')]);
    c.requeue(['held']);
    vi.advanceTimersByTime(100);
    const b = batches[0] as CoalescedBatch;
    expect([...b.changes.keys()].sort()).toEqual(['a', 'b', 'held']);
    expect(b.seenAt?.get('a')).toBeGreaterThanOrEqual(before);
    expect(b.seenAt?.get('b')).toBe(b.seenAt?.get('a'));
    expect(b.seenAt?.has('held')).toBe(false);
  });

  it('netChange says what a path amounts to, for any sequence of events that fits the file existing or not (property)', () => {
    fc.assert(
      fc.property(fc.boolean(), fc.array(fc.nat({ max: 2 }), { minLength: 1, maxLength: 12 }), (existedBefore, choices) => {
        let exists = existedBefore;
        const types: WatchEvent['type'][] = [];
        for (const ch of choices) {
          // Only events that can happen: create when absent; update or delete when present.
          const t: WatchEvent['type'] = !exists ? 'create' : ch === 0 ? 'delete' : 'update';
          types.push(t);
          exists = t !== 'delete';
        }
        const net = netChange(types[0] as WatchEvent['type'], types[types.length - 1] as WatchEvent['type']);
        const expected = existedBefore ? (exists ? 'changed' : 'deleted') : exists ? 'created' : null;
        expect(net).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });
});

describe('reconcile job planning', () => {
  it('one changed file: a job for that file alone', () => {
    expect(planJobs([{ path: 'a/x.txt', recursive: false }])).toEqual([{ path: 'a/x.txt', recursive: false }]);
  });

  it('several changes in one directory: one job for the directory and its children', () => {
    const plan = planJobs(['a/x', 'a/y', 'a/z'].map((path) => ({ path, recursive: false })));
    expect(plan).toEqual([{ path: 'a', recursive: false }]);
  });

  it('a new directory: one recursive job covers whatever was reported below it', () => {
    const plan = planJobs([
      { path: 'new', recursive: true },
      { path: 'new/a', recursive: false },
      { path: 'new/sub', recursive: true },
      { path: 'other.txt', recursive: false },
    ]);
    expect(plan).toEqual([
      { path: 'new', recursive: true },
      { path: 'other.txt', recursive: false },
    ]);
  });

  it('changes spread over many directories never become more than maxJobs jobs', () => {
    const targets = Array.from({ length: 500 }, (_, i) => ({ path: `p${i % 5}/d${i}/f`, recursive: false }));
    const plan = planJobs(targets, 8);
    expect(plan.length).toBeLessThanOrEqual(8);
    expect(plan).toEqual(expect.arrayContaining([{ path: 'p0', recursive: true }]));
  });

  it('jobs that could not be queued are named once every send has settled; the others are sent', async () => {
    const sent: string[] = [];
    let settled = 0;
    const queue = {
      async enqueue(r: ReconcileRequest) {
        await new Promise((resolve) => setTimeout(resolve, r.path === 'slow' ? 30 : 1));
        settled++;
        if (r.path.startsWith('bad')) throw new Error(`queue refused ${r.path}`);
        sent.push(r.path);
        return { job: {} as never, coalesced: false };
      },
    };
    const targets = ['bad1', 'good', 'slow', 'bad2'].map((path) => ({ path, recursive: true }));
    const err = await enqueuePlanned(queue, targets, { mountId: 'm', reason: 'drift', hash: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EnqueueError);
    expect((err as EnqueueError).unsent.map((t) => t.path).sort()).toEqual(['bad1', 'bad2']);
    expect((err as EnqueueError).message).toMatch(/2 reconcile job\(s\) could not be queued: queue refused bad/);
    expect(settled).toBe(4); // the slow one too: nothing is still being sent when it throws
    expect(sent.sort()).toEqual(['good', 'slow']);
    expect(await enqueuePlanned(queue, [{ path: 'good', recursive: false }], { mountId: 'm', reason: 'drift', hash: false })).toBe(1);
  });
});
