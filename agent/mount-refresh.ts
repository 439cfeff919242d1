import type { Mount } from '../shared/catalogue/index.ts';
import type { Filestore } from '../shared/index-runtime.ts';
import { MountWatcher, watchMounts, type WatchersHandle, type WatchMountsOptions } from './watch/index.ts';
import type { WatchBackendChoice } from './watch/types.ts';

export interface MountRefreshOptions {
  agentId: string;
  debounceMs?: number | undefined;
  /** For every mount, unless `perMount` (by mount key) says otherwise. */
  backend?: WatchBackendChoice | undefined;
  perMount?: Record<string, WatchBackendChoice> | undefined;
  /** The local mounts this agent owns now (read from the catalogue). */
  ownedMounts: () => Promise<Mount[]>;
  /** Told each refresh's owned mounts (RunningAgent.mounts()). */
  onOwned: (mounts: Mount[]) => void;
  /** True once the agent is stopping: no refresh starts, and watchers a refresh started are closed. */
  stopped: () => boolean;
  /** How often (default 30 s). */
  intervalMs?: number | undefined;
  log: (line: string) => void;
}

export interface MountRefresh {
  /** The watchers started with the agent. */
  readonly handle: WatchersHandle;
  /** Keys of the mounts being watched right now, sorted. */
  watched(): string[];
  /** Stops the refresh and closes every watcher it keeps (each judges what is pending first). */
  close(): Promise<void>;
}

/**
 * The agent's watchers: one per mount of `owned` it owns, then kept in step by a refresh every
 * `intervalMs`: mounts assigned later get one, a watcher that failed to start is tried again, a
 * mount taken away (or gone) has its watcher closed. One refresh at a time.
 */
export async function watchOwnedMounts(core: Filestore, owned: readonly Mount[], o: MountRefreshOptions): Promise<MountRefresh> {
  const { agentId, log } = o;
  const perMount = o.perMount ?? {};
  const watch: WatchMountsOptions = {
    agentId,
    debounceMs: o.debounceMs,
    backend: o.backend,
    backendFor: (m: Mount) => perMount[m.key],
    log,
  };
  const watchers = await watchMounts(core, owned, watch);
  const live = new Map<string, MountWatcher>(watchers.watchers.map((w) => [w.mount.id, w]));
  let refreshing = false;
  const refresh = async () => {
    const now = await o.ownedMounts();
    o.onOwned(now);
    const ids = new Set(now.map((m) => m.id));
    for (const [id, w] of live) {
      if (ids.has(id)) continue;
      live.delete(id);
      await w.close().catch((e: Error) => log(`watcher ${w.mount.key}: close: ${e.message}`));
      log(`agent ${agentId}: stopped watching ${w.mount.key} (no longer this agent's)`);
    }
    const fresh = now.filter((m) => !live.has(m.id));
    if (fresh.length === 0 || o.stopped()) return;
    const more = await watchMounts(core, fresh, watch);
    // stop() closed the watchers while these started: close them too, or they outlive the agent.
    if (o.stopped()) {
      await more.close();
      return;
    }
    for (const w of more.watchers) live.set(w.mount.id, w);
    if (more.watchers.length > 0) log(`agent ${agentId}: watching ${more.watchers.map((w) => w.mount.key).join(', ')}`);
  };
  const timer = setInterval(() => {
    if (refreshing || o.stopped()) return;
    refreshing = true;
    void refresh()
      .catch((e: Error) => log(`agent ${agentId}: mount refresh: ${e.message}`))
      .finally(() => {
        refreshing = false;
      });
  }, o.intervalMs ?? 30_000);
  timer.unref();
  log(`agent ${agentId}: watching ${watchers.watchers.length} local mount(s)${watchers.failed.length ? `, ${watchers.failed.length} failed to start` : ''}`);
  return {
    handle: watchers,
    watched: () => [...live.values()].map((w) => w.mount.key).sort(),
    async close() {
      clearInterval(timer);
      await Promise.all([...live.values()].map((w) => w.close()));
    },
  };
}
