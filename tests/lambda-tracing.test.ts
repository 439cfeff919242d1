/**
 * The Lambdas' X-Ray tracing (lambdas/support/instrument.ts): present in Lambda, where
 * Powertools Tracer enables itself, and not even loaded elsewhere — the X-Ray SDK installs an
 * async hook (cls-hooked, which registers itself as `process.namespaces`) at import, and that
 * hook taxes every promise of the process whether tracing is on or off.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tracingWanted } from '../lambdas/support/instrument.ts';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Imports the instrumentation in a fresh process with `env`; says whether a tracer exists and whether the X-Ray SDK's hook was installed. */
function loadIn(env: Record<string, string>): { tracer: boolean; enabled: boolean; xrayLoaded: boolean } {
  const script = [
    "const m = await import('./lambdas/support/instrument.ts');",
    'console.log(JSON.stringify({ tracer: m.tracer !== undefined, enabled: m.tracer?.isTracingEnabled() ?? false, xrayLoaded: process.namespaces !== undefined }));',
  ].join('\n');
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(AWS_EXECUTION_ENV|AWS_SAM_LOCAL|POWERTOOLS_TRACE_ENABLED)$/.test(k)));
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, env: { ...base, ...env }, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { tracer: boolean; enabled: boolean; xrayLoaded: boolean };
}

describe('Lambda tracing', () => {
  it('outside Lambda the X-Ray SDK is not loaded, so its async hook taxes nothing', () => {
    expect(loadIn({})).toEqual({ tracer: false, enabled: false, xrayLoaded: false });
  });

  it('in Lambda the handlers are traced', () => {
    expect(loadIn({ AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs24.x' })).toEqual({ tracer: true, enabled: true, xrayLoaded: true });
  });

  it('POWERTOOLS_TRACE_ENABLED=false in Lambda turns it off and keeps the SDK out', () => {
    expect(loadIn({ AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs24.x', POWERTOOLS_TRACE_ENABLED: 'false' })).toEqual({ tracer: false, enabled: false, xrayLoaded: false });
  });

  it('follows Powertools Tracer: SAM local and the Amplify mock are not traced', () => {
    expect(tracingWanted({ AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs24.x', AWS_SAM_LOCAL: 'true' })).toBe(false);
    expect(tracingWanted({ AWS_EXECUTION_ENV: 'AWS_Lambda_amplify-mock' })).toBe(false);
    expect(tracingWanted({ AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs24.x', POWERTOOLS_TRACE_ENABLED: 'TRUE' })).toBe(true);
  });
});
