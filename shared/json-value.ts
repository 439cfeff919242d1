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

/** True when `s` holds a lone surrogate (not representable in UTF-8). */
export const hasLoneSurrogate = (s: string): boolean => LONE_SURROGATE.test(s);

/** Where a value nests deeper than `maxDepth`, as a dotted path; null when it does not. */
export function tooDeep(value: unknown, maxDepth = MAX_JSON_DEPTH): string | null {
  return firstProblem(value, maxDepth, false)?.at ?? null;
}

/** The first string (key or value) holding a lone surrogate, or nesting deeper than `maxDepth`: what and where. */
export function jsonValueProblem(value: unknown, maxDepth = MAX_JSON_DEPTH): { at: string; problem: string } | null {
  return firstProblem(value, maxDepth, true);
}

function firstProblem(value: unknown, maxDepth: number, strings: boolean): { at: string; problem: string } | null {
  const stack: Array<{ v: unknown; depth: number; at: string }> = [{ v: value, depth: 1, at: '' }];
  const join = (at: string, k: string) => (at === '' ? k : `${at}.${k}`);
  while (stack.length > 0) {
    const { v, depth, at } = stack.pop() as { v: unknown; depth: number; at: string };
    if (typeof v === 'string') {
      if (strings && hasLoneSurrogate(v)) return { at: at || 'body', problem: 'not valid Unicode (a lone surrogate)' };
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth > maxDepth) return { at: at || 'body', problem: `nested deeper than ${maxDepth} levels` };
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ v: v[i], depth: depth + 1, at: join(at, String(i)) });
      continue;
    }
    const keys = Object.keys(v);
    for (let i = keys.length - 1; i >= 0; i--) {
      const k = keys[i] as string;
      if (strings && hasLoneSurrogate(k)) return { at: join(at, '<key>'), problem: 'a key that is not valid Unicode (a lone surrogate)' };
      stack.push({ v: (v as Record<string, unknown>)[k], depth: depth + 1, at: join(at, k) });
    }
  }
  return null;
}
