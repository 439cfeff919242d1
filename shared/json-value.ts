/**
 * JSON values Filestore stores (journal requests, metadata, job options) go into PostgreSQL
 * jsonb, which refuses strings that are not valid Unicode (a lone UTF-16 surrogate, e.g. from
 * the escape "\ud800"), and are walked by code whose recursion must stay bounded. Both are
 * checked at the edges, iteratively, so neither surfaces as a 500.
 */

/** How deeply a JSON body or a stored value may nest (the body itself is level 1). */
export const MAX_JSON_DEPTH = 64;

// With the u flag a surrogate pair is one code point, so this matches lone surrogates only.
const LONE_SURROGATE = /\p{Cs}/u;

// String.prototype.isWellFormed (Node 20+) answers the same question natively, without a regex.
const isWellFormed: (s: string) => boolean =
  typeof (String.prototype as { isWellFormed?: unknown }).isWellFormed === 'function'
    ? (s) => (s as unknown as { isWellFormed(): boolean }).isWellFormed()
    : (s) => !LONE_SURROGATE.test(s);

/** True when `s` holds a lone surrogate (not representable in UTF-8). */
export const hasLoneSurrogate = (s: string): boolean => !isWellFormed(s);

/** Where a value nests deeper than `maxDepth`, as a dotted path; null when it does not. */
export function tooDeep(value: unknown, maxDepth = MAX_JSON_DEPTH): string | null {
  return firstProblem(value, maxDepth, false)?.at ?? null;
}

/** The first string (key or value) holding a lone surrogate, or nesting deeper than `maxDepth`: what and where. */
export function jsonValueProblem(value: unknown, maxDepth = MAX_JSON_DEPTH): { at: string; problem: string } | null {
  return firstProblem(value, maxDepth, true);
}

// Values whose whole tree passed jsonValueProblem (parseInput's results): code further in that
// would check them again (fingerprint) asks checkedBefore instead of walking them anew.
const checked = new WeakSet<object>();

/** Records that `value` passed jsonValueProblem and will not be changed; returns it. */
export function vouchFor<T extends object>(value: T): T {
  checked.add(value);
  return value;
}

/** True when `value` passed jsonValueProblem before (vouchFor). */
export const checkedBefore = (value: unknown): boolean => typeof value === 'object' && value !== null && checked.has(value);

/**
 * Walks are iterative (a 100k-deep value must not overflow the stack) and cheap: containers go
 * on a stack of values and depths, scalars are checked where they are met, and no path is
 * built while everything passes — only a failing value is walked again to say where.
 */
function firstProblem(value: unknown, maxDepth: number, strings: boolean): { at: string; problem: string } | null {
  return passes(value, maxDepth, strings) ? null : locate(value, maxDepth, strings);
}

function passes(value: unknown, maxDepth: number, strings: boolean): boolean {
  if (typeof value === 'string') return !strings || isWellFormed(value);
  if (value === null || typeof value !== 'object') return true;
  const values: object[] = [value];
  const depths: number[] = [1];
  while (values.length > 0) {
    const v = values.pop() as object;
    const depth = depths.pop() as number;
    if (depth > maxDepth) return false;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const x: unknown = v[i];
        if (typeof x === 'object') {
          if (x !== null) {
            values.push(x);
            depths.push(depth + 1);
          }
        } else if (strings && typeof x === 'string' && !isWellFormed(x)) return false;
      }
      continue;
    }
    for (const k of Object.keys(v)) {
      if (strings && !isWellFormed(k)) return false;
      const x: unknown = (v as Record<string, unknown>)[k];
      if (typeof x === 'object') {
        if (x !== null) {
          values.push(x);
          depths.push(depth + 1);
        }
      } else if (strings && typeof x === 'string' && !isWellFormed(x)) return false;
    }
  }
  return true;
}

interface Step {
  v: unknown;
  depth: number;
  parent: Step | null;
  key: string;
}

/** The walk of the checks above, in the same order, keeping each container's way back to the root. */
function locate(value: unknown, maxDepth: number, strings: boolean): { at: string; problem: string } | null {
  const pathOf = (s: Step | null, key?: string): string => {
    const keys = key === undefined ? [] : [key];
    for (let at = s; at !== null && at.parent !== null; at = at.parent) keys.push(at.key);
    return keys.reverse().join('.') || 'body';
  };
  const stack: Step[] = [{ v: value, depth: 1, parent: null, key: '' }];
  while (stack.length > 0) {
    const step = stack.pop() as Step;
    const { v, depth } = step;
    if (typeof v === 'string') {
      if (strings && !isWellFormed(v)) return { at: pathOf(step), problem: 'not valid Unicode (a lone surrogate)' };
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth > maxDepth) return { at: pathOf(step), problem: `nested deeper than ${maxDepth} levels` };
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ v: v[i], depth: depth + 1, parent: step, key: String(i) });
      continue;
    }
    const keys = Object.keys(v);
    for (let i = keys.length - 1; i >= 0; i--) {
      const k = keys[i] as string;
      if (strings && !isWellFormed(k)) return { at: pathOf(step, '<key>'), problem: 'a key that is not valid Unicode (a lone surrogate)' };
      stack.push({ v: (v as Record<string, unknown>)[k], depth: depth + 1, parent: step, key: k });
    }
  }
  return null;
}
