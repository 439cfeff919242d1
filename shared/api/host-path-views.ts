import type { EventEnvelope } from '../catalogue/outbox.ts';
import type { Principal } from './auth.ts';
import type { ApiDeps } from './deps.ts';
import { errorFor, redactText, seesHostPaths } from './host-paths.ts';
import { hideHostTargets, hostTargetsIn, mountsNamedByHostTargets } from './symlink-targets.ts';
import type { ApiResponse } from './route.ts';

/**
 * Answers and events as a caller without filestore:admin may see them: symlink targets naming
 * the host (symlink-targets.ts) and, in events, a failed command's error (host-paths.ts), which
 * the journal and error responses already redact. Both need the mount's root to say
 * `<mount root>/…` rather than `<host path>`; roots never change, so they are remembered.
 */
class MountRoots {
  private readonly roots = new Map<string, readonly string[]>();

  constructor(private readonly deps: ApiDeps) {}

  /** The roots of a mount already looked up; undefined when not (yet) known. */
  known(mountId: string | undefined): readonly string[] | undefined {
    return mountId === undefined ? [] : this.roots.get(mountId);
  }

  /** Looks the mounts up (a gone mount has none); a failed lookup is not remembered. */
  async load(mountIds: Iterable<string>): Promise<void> {
    await Promise.all(
      [...mountIds]
        .filter((id) => !this.roots.has(id))
        .map(async (id) => {
          const mount = await this.deps.core.reader.mount(id).catch((err: unknown) => ((err as { code?: string }).code === 'MOUNT_NOT_FOUND' ? null : undefined));
          if (mount === undefined) return;
          if (this.roots.size > 10_000) this.roots.clear();
          this.roots.set(id, mount?.rootPath ? [mount.rootPath] : []);
        }),
    );
  }
}

const rootsByDeps = new WeakMap<ApiDeps, MountRoots>();
const rootsFor = (deps: ApiDeps): MountRoots => {
  let roots = rootsByDeps.get(deps);
  if (!roots) rootsByDeps.set(deps, (roots = new MountRoots(deps)));
  return roots;
};

/** A JSON answer without the symlink targets `principal` may not see (most answers come back as they are). */
export async function answerFor<R extends ApiResponse>(res: R, principal: Principal, deps: ApiDeps): Promise<R | (ApiResponse & { json: unknown })> {
  if (seesHostPaths(principal)) return res;
  let value: unknown;
  if ('json' in res) value = res.json;
  else if ('jsonText' in res && res.jsonText.includes('"symlinkTarget"')) value = JSON.parse(res.jsonText) as unknown;
  else return res;
  if (hostTargetsIn(value).length === 0) return res;
  const roots = rootsFor(deps);
  await roots.load(mountsNamedByHostTargets(value));
  const json = hideHostTargets(value, (id) => roots.known(id) ?? []);
  return { status: res.status, ...(res.headers ? { headers: res.headers } : {}), json };
}

// One view of an event serves every stream without filestore:admin (it does not depend on who).
const shown = new WeakMap<EventEnvelope, EventEnvelope>();

/** Events as a stream of a caller without filestore:admin carries them. */
export class EventView {
  private readonly roots: MountRoots;

  constructor(deps: ApiDeps) {
    this.roots = rootsFor(deps);
  }

  /** Null, or the mount whose root must be looked up before `e` can be shown (show is synchronous). */
  needs(e: EventEnvelope): string | null {
    if (shown.has(e) || this.roots.known(e.mountId) !== undefined) return null;
    return carriesError(e) || hostTargetsIn(e.data, e.mountId).length > 0 ? e.mountId : null;
  }

  load(mountId: string): Promise<void> {
    return this.roots.load([mountId]);
  }

  show(e: EventEnvelope): EventEnvelope {
    const done = shown.get(e);
    if (done) return done;
    const roots = this.roots.known(e.mountId);
    let data = hideHostTargets(e.data, (id) => this.roots.known(id ?? e.mountId) ?? [], e.mountId);
    const error = carriesError(e);
    if (error) {
      // The root unknown (its lookup failed): every absolute path in the message goes too.
      const e2 = errorFor(error, undefined, roots ?? []);
      data = { ...data, error: roots === undefined ? { ...e2, message: redactText(e2.message, []) } : e2 };
    }
    const view = data === e.data ? e : { ...e, data };
    if (roots !== undefined || view === e) shown.set(e, view);
    return view;
  }
}

function carriesError(e: EventEnvelope): { message: string; details?: Record<string, unknown> } | null {
  const error = e.data.error;
  return error !== null && typeof error === 'object' && typeof (error as { message?: unknown }).message === 'string'
    ? (error as { message: string; details?: Record<string, unknown> })
    : null;
}
