/**
 * Symlink targets are where a link points, as `readlink` gives it. A relative target that
 * stays inside the mount is the tree's own content and is shown to everyone. An absolute
 * target, or a relative one that climbs above the mount's root, names the host's filesystem
 * — the mount's root itself, often ("/srv/data/docs/v3") — and is therefore a host path, told
 * only to callers with filestore:admin like the root (see host-paths.ts): for the others it
 * reads `<mount root>/docs/v3` when it points inside the mount, `<host path>` otherwise.
 *
 * Targets are found wherever a symlink's node or entry is: `metadata.symlinkTarget` of a node
 * (API answers, snapshots' `state`, journal results, events), `symlinkTarget` of an observed
 * entry (drift events). The link's path is its `path`, its mount the nearest `mountId` (or the
 * event's).
 */

/** True when `target`, the target of the link at mount-relative `linkPath`, leads out of the mount. */
export function targetNamesHost(target: string, linkPath: string | undefined): boolean {
  if (target.startsWith('/')) return true;
  if (!target.includes('..')) return false;
  if (linkPath === undefined) return true; // cannot tell where it climbs to
  let depth = linkPath.split('/').length - 1; // the link's directory, below the root
  for (const part of target.split('/')) {
    if (part === '..') depth--;
    else if (part !== '' && part !== '.') depth++;
    if (depth < 0) return true;
  }
  return false;
}

/** A target as a caller without filestore:admin sees it; `roots` are its mount's root(s). */
export function targetFor(target: string, linkPath: string | undefined, roots: readonly string[]): string {
  if (!targetNamesHost(target, linkPath)) return target;
  if (target.startsWith('/')) {
    for (const r of [...roots].sort((a, b) => b.length - a.length)) {
      const root = r.length > 1 ? r.replace(/\/+$/, '') : r;
      if (root.length > 1 && (target === root || target.startsWith(`${root}/`))) return `<mount root>${target.slice(root.length)}`;
    }
  }
  return '<host path>';
}

interface Found {
  holder: Record<string, unknown>;
  linkPath: string | undefined;
  mountId: string | undefined;
}

/** Objects in `value` holding a symlink target that names the host (walked iteratively, nothing copied). */
export function hostTargetsIn(value: unknown, mountId?: string): Found[] {
  const found: Found[] = [];
  const stack: Array<{ v: unknown; linkPath: string | undefined; mountId: string | undefined }> = [{ v: value, linkPath: undefined, mountId }];
  while (stack.length > 0) {
    const { v, linkPath: outerPath, mountId: outerMount } = stack.pop() as (typeof stack)[number];
    if (v === null || typeof v !== 'object' || v instanceof Date) continue;
    if (Array.isArray(v)) {
      for (const x of v) if (x !== null && typeof x === 'object') stack.push({ v: x, linkPath: outerPath, mountId: outerMount });
      continue;
    }
    const o = v as Record<string, unknown>;
    const linkPath = typeof o.path === 'string' ? o.path : outerPath;
    const here = typeof o.mountId === 'string' ? o.mountId : outerMount;
    if (o.kind === 'symlink') {
      // A node keeps its target in metadata (which only Filestore sets: the key is reserved), an observed entry on itself.
      const meta = o.metadata;
      const holder = meta !== null && typeof meta === 'object' && typeof (meta as Record<string, unknown>).symlinkTarget === 'string' ? (meta as Record<string, unknown>) : o;
      if (typeof holder.symlinkTarget === 'string' && targetNamesHost(holder.symlinkTarget, linkPath)) found.push({ holder, linkPath, mountId: here });
    }
    for (const k in o) {
      const x = o[k];
      if (x !== null && typeof x === 'object') stack.push({ v: x, linkPath, mountId: here });
    }
  }
  return found;
}

/**
 * `value` with every symlink target that names the host replaced (see targetFor); `value`
 * itself is returned when there is none, a copy otherwise (the original may be shared: an
 * event handed to every stream, a cached row).
 */
export function hideHostTargets<T>(value: T, rootsOf: (mountId: string | undefined) => readonly string[], mountId?: string): T {
  if (hostTargetsIn(value, mountId).length === 0) return value;
  const copy = structuredClone(value);
  for (const f of hostTargetsIn(copy, mountId)) f.holder.symlinkTarget = targetFor(f.holder.symlinkTarget as string, f.linkPath, rootsOf(f.mountId));
  return copy;
}

/** The mounts whose roots hideHostTargets will ask for (load them first where the lookup is asynchronous). */
export const mountsNamedByHostTargets = (value: unknown, mountId?: string): Set<string> =>
  new Set(hostTargetsIn(value, mountId).flatMap((f) => (f.mountId === undefined ? [] : [f.mountId])));
