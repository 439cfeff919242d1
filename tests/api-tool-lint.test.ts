import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DROPPED_DEFAULTS } from '../shared/metrics/prom.ts';
import { qs, useApiServer } from './support/http.ts';

/**
 * The interfaces checked by the tools their users run (issue 16, item 13), on what a real
 * server serves:
 * - `redocly lint` (recommended rules, redocly.yaml) on GET /openapi.json: no error, no warning;
 * - `promtool check metrics` on GET /metrics: exit 0, no lint line.
 *
 * @redocly/cli is installed here at a pinned version into .cache/redocly-cli (npm, kept out of
 * the package's dependencies, as test:node24 does with Node 24). promtool comes from Debian's `prometheus`
 * package, installed by .ci/run, or here when absent and this runs as root. Each test skips, saying why, only
 * where its tool cannot be installed.
 */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const REDOCLY_VERSION = '2.77.0';
const REDOCLY_PREFIX = path.join(ROOT, '.cache/redocly-cli');
const REDOCLY_BIN = path.join(REDOCLY_PREFIX, 'node_modules/.bin/redocly');

const { c, mountOf } = useApiServer('write');

const tmp = mkdtemp(path.join(os.tmpdir(), 'filestore-lint-'));
afterAll(async () => rm(await tmp, { recursive: true, force: true }));

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end; never throws for a non-zero exit (the caller asserts it). */
function runTool(cmd: string, args: string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) => resolve({ code: null, stdout, stderr: `${stderr}${err.message}` }));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}

/** The path of the pinned redocly, installed when missing; or why it cannot be. */
async function redocly(): Promise<{ bin: string } | { unavailable: string }> {
  const manifest = path.join(REDOCLY_PREFIX, 'node_modules/@redocly/cli/package.json');
  const installed = () => existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version === REDOCLY_VERSION;
  if (!installed()) {
    const npm = await runTool('npm', ['install', '--prefix', REDOCLY_PREFIX, '--no-save', '--no-audit', '--no-fund', `@redocly/cli@${REDOCLY_VERSION}`]);
    if (npm.code !== 0 || !installed()) return { unavailable: `@redocly/cli@${REDOCLY_VERSION} could not be installed: ${npm.stderr.trim().slice(-400)}` };
  }
  return { bin: REDOCLY_BIN };
}

/** `promtool`, installed from Debian's prometheus package when missing (root only); or why not. */
async function promtool(): Promise<{ bin: string } | { unavailable: string }> {
  const found = async () => ((await runTool('promtool', ['--version'])).code === 0 ? { bin: 'promtool' } : null);
  const present = await found();
  if (present) return present;
  if (process.getuid?.() !== 0 || !existsSync('/usr/bin/apt-get')) return { unavailable: 'promtool is not installed, and installing it (apt-get install prometheus) needs root and apt' };
  const env = { DEBIAN_FRONTEND: 'noninteractive' };
  const args = ['install', '-y', '-q', '--no-install-recommends', 'prometheus'];
  if ((await runTool('apt-get', args, { env })).code !== 0) {
    await runTool('apt-get', ['update', '-q'], { env });
    const second = await runTool('apt-get', args, { env });
    if (second.code !== 0) return { unavailable: `apt-get install prometheus failed: ${second.stderr.trim().slice(-400)}` };
  }
  return (await found()) ?? { unavailable: 'the prometheus package installed no promtool' };
}

interface LintReport {
  totals: { errors: number; warnings: number; ignored: number };
  problems: Array<{ ruleId: string; severity: string; message: string; location: Array<{ pointer: string }> }>;
}

async function lint(bin: string, doc: unknown): Promise<LintReport> {
  const file = path.join(await tmp, `openapi-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, JSON.stringify(doc, null, 2));
  const env = { REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' };
  const ran = await runTool(bin, ['lint', '--config', path.join(ROOT, 'redocly.yaml'), '--format=json', file], { env });
  // Exit 1 when there are errors; the report is on stdout either way.
  expect(ran.code === 0 || ran.code === 1, `redocly: ${ran.stderr}`).toBe(true);
  return JSON.parse(ran.stdout) as LintReport;
}

const summary = (r: LintReport) => r.problems.map((p) => `${p.severity} ${p.ruleId} ${p.location.map((l) => l.pointer).join(' ')}: ${p.message}`);

describe('redocly lint on GET /openapi.json', () => {
  it('the recommended rules (redocly.yaml) find no error and no warning', { timeout: 180_000 }, async (ctx) => {
    const tool = await redocly();
    if ('unavailable' in tool) return ctx.skip(tool.unavailable);
    expect((await runTool(tool.bin, ['--version'])).stdout.trim()).toBe(REDOCLY_VERSION);

    const doc = await c.json<Record<string, unknown>>('GET', '/openapi.json', 200, { token: 'none' });
    const report = await lint(tool.bin, doc);
    expect(summary(report)).toEqual([]);
    expect(report.totals).toEqual({ errors: 0, warnings: 0, ignored: 0 });

    // The linter really checks this document with these rules: without servers it is an error.
    const { servers: _, ...withoutServers } = doc;
    expect(summary(await lint(tool.bin, withoutServers))).toEqual(['error no-empty-servers #/openapi: Servers must be present.']);
  });
});

describe('promtool check metrics on GET /metrics', () => {
  it('prom-client defaults named like counters are left out; their per-type gauges stay', async () => {
    const text = await (await c.call('GET', '/metrics', { token: 'none' })).text();
    for (const name of DROPPED_DEFAULTS) expect(text, name).not.toMatch(new RegExp(`^(# TYPE )?${name}\\b`, 'm'));
    expect(text).toMatch(/^# TYPE nodejs_active_handles gauge$/m);
    expect(text).toMatch(/^# TYPE process_cpu_seconds_total counter$/m);
  });

  it('finds nothing to say about what a working server exposes', { timeout: 300_000 }, async (ctx) => {
    const tool = await promtool();
    if ('unavailable' in tool) return ctx.skip(tool.unavailable);
    // Traffic first, so that our counters and histograms have samples, errors included.
    const t = await mountOf();
    await c.json('PUT', `/v1/files?${qs({ mountId: t.mount.key, path: 'm/one.txt' })}`, 200, { body: 'one' });
    await c.call('GET', `/v1/nodes/by-path?${qs({ mountId: t.mount.key, path: 'nope' })}`, { token: 'read' });
    const text = await (await c.call('GET', '/metrics', { token: 'none' })).text();
    for (const name of ['filestore_http_requests_total', 'filestore_http_request_duration_seconds_bucket', 'filestore_executor_operations_total', 'process_cpu_seconds_total']) {
      expect(text, name).toMatch(new RegExp(`^${name}[{ ]`, 'm'));
    }

    const checked = await runTool(tool.bin, ['check', 'metrics'], { input: text });
    expect(`${checked.stdout}${checked.stderr}`).toBe('');
    expect(checked.code).toBe(0);
  });
});
