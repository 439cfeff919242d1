import type { Mount } from '../catalogue/types.ts';
import type { Principal } from './auth.ts';

/**
 * Where mounts live on their hosts (a local mount's root, and the host paths in what went
 * wrong with it) is for admins: read and write tokens get `rootPath: null` and messages whose
 * host paths are replaced — the mount's root by `<mount root>` (so "…/docs does not exist"
 * stays useful), any other absolute path by `<host path>`.
 */
export const seesHostPaths = (p: Principal): boolean => p.scopes.has('filestore:admin');

/** A mount as `p` may see it. */
export function mountFor<M extends Mount>(m: M, p: Principal): M {
  if (seesHostPaths(p)) return m;
  const roots = m.rootPath ? [m.rootPath] : [];
  return { ...m, rootPath: null, healthReason: m.healthReason === null ? null : redactText(m.healthReason, roots) };
}

// An absolute path in free text: a "/" not preceded by a name, a scheme ("s3://") or another
// path; it runs to a space or punctuation, and on over " word/…" (a name with a space inside a
// path: "/mnt/My Disk/x"). A last segment holding a space cannot be told from the words after it.
const PART = String.raw`[^\s"'\`()[\]{},;:]`;
const ABSOLUTE = new RegExp(String.raw`(?<![\w.~:/<>-])/${PART}*(?: [^\s"'\`()[\]{},;:/]+/${PART}*)*`, 'g');
const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * `text` with each of `roots` (mount roots, known exactly, spaces and all) read as `<mount
 * root>` — longest first, so a root inside another is not cut short, and only whole (not
 * "/mnt/data" inside "/mnt/data2").
 */
export function replaceRoots(text: string, roots: readonly string[]): string {
  const whole = [...new Set(roots.map((r) => (r.length > 1 ? r.replace(/\/+$/, '') : r)).filter((r) => r.startsWith('/') && r.length > 1))].sort(
    (a, b) => b.length - a.length,
  );
  if (whole.length === 0 || !whole.some((r) => text.includes(r))) return text;
  return text.replace(new RegExp(`(?<![\\w.~/-])(?:${whole.map(escapeRegExp).join('|')})(?![\\w.~-])`, 'g'), '<mount root>');
}

/** `text` with host paths replaced: the mount roots it may name (`roots`) exactly, then anything absolute-looking. */
export function redactText(text: string, roots: readonly string[]): string {
  return replaceRoots(text, roots).replace(ABSOLUTE, '<host path>');
}

/** A JSON value (a job's error) with host paths replaced in every string; bounded depth. */
export function redactValue(value: unknown, roots: readonly string[], depth = 0): unknown {
  if (typeof value === 'string') return redactText(value, roots);
  if (value === null || typeof value !== 'object' || depth > 16) return depth > 16 ? null : value;
  if (Array.isArray(value)) return value.map((v) => redactValue(v, roots, depth + 1));
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactValue(v, roots, depth + 1)]));
}

/**
 * An error as `p` may see it (an API error body, a journal entry's error): host paths in its
 * details are redacted, and the mount roots in `roots` in its message. Messages otherwise name
 * mount-relative paths and routes, which the generic redaction would mangle.
 */
export function errorFor<E extends { message: string; details?: Record<string, unknown> | undefined }>(e: E, p: Principal | undefined, known: readonly string[] = []): E {
  if (p && seesHostPaths(p)) return e;
  // An error about a mount's root (unreachable now) names it in details.rootPath, and in its message.
  const named = e.details?.rootPath;
  const roots = typeof named === 'string' && named.startsWith('/') ? [...known, named] : known;
  if (e.details === undefined && roots.every((r) => !e.message.includes(r))) return e;
  const message = replaceRoots(e.message, roots);
  return e.details === undefined ? { ...e, message } : { ...e, message, details: redactValue(e.details, roots) as Record<string, unknown> };
}
