/**
 * The layers of docs/architecture.md, as CI checks them (`npm run lint:deps`, dependency-cruiser
 * with .dependency-cruiser.cjs): the real tree passes, and a forbidden import of each kind fails
 * the same command. The forbidden imports are written into a scratch copy of the layout (the
 * real tree is shared with other work in progress; nothing is written into it).
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CONFIG = path.join(ROOT, '.dependency-cruiser.cjs');
const DEPCRUISE = path.join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');
const run = promisify(execFile);

interface Outcome {
  code: number;
  out: string;
}

/** `npm run lint:deps`'s command (package.json), run in `cwd`: its exit code and report. */
async function lintDeps(cwd: string): Promise<Outcome> {
  const manifest = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const [bin, ...args] = manifest.scripts['lint:deps']!.split(/\s+/);
  expect(bin).toBe('depcruise');
  const withConfig = args.map((a) => (a === '.dependency-cruiser.cjs' ? CONFIG : a));
  try {
    const { stdout, stderr } = await run(process.execPath, [DEPCRUISE, ...withConfig], { cwd, maxBuffer: 16 << 20 });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

/**
 * The violations a report lists, as `rule: from`, each once (a cycle is reported from one of its
 * members or from each: a module cycle is named by its folder).
 */
const violations = (out: string): string[] =>
  [...new Set([...out.matchAll(/^\s*error ([\w-]+): (\S+)/gm)].map((m) => `${m[1]}: ${m[1] === 'no-circular' ? path.posix.dirname(m[2]!) : m[2]}`))].sort();

// A small tree laid out as the real one: the entry files and a module behind each.
const CLEAN: Record<string, string> = {
  'shared/errors.ts': 'export class FilestoreError extends Error {}\n',
  'shared/index.ts': "export { FilestoreError } from './errors.ts';\n",
  'shared/runtime.ts': "import { listMounts } from './catalogue/mounts.ts';\nexport const wireFilestore = () => listMounts();\n",
  'shared/catalogue/types.ts': 'export interface Mount { id: string }\n',
  'shared/catalogue/mounts.ts': "import type { Mount } from './types.ts';\nexport const listMounts = (): Mount[] => [];\n",
  'shared/catalogue/index.ts': "export { listMounts } from './mounts.ts';\nexport type { Mount } from './types.ts';\n",
  'shared/orchestrator/run.ts': "import { listMounts } from '../catalogue/index.ts';\nexport const run = () => listMounts();\n",
  'agent/agent.ts': "import { listMounts, type Mount } from '../shared/catalogue/index.ts';\nexport const mounts: Mount[] = listMounts();\n",
  'reconcile-worker/main.ts': "import { FilestoreError } from '../shared/index.ts';\nexport const fail = () => new FilestoreError();\n",
  'lambdas/support/config.ts': "import { FilestoreError } from '../../shared/index.ts';\nexport const fail = () => new FilestoreError();\n",
  'cli/build-options.ts': 'export const NODE_TARGET = "node20";\n',
  'cdk/bundles.ts': "import { NODE_TARGET } from '../cli/build-options.ts';\nexport const target = NODE_TARGET;\n",
};

// One import of each forbidden kind, and the violation each must be reported as.
const FORBIDDEN: Record<string, string> = {
  // shared/ importing a shell
  'shared/catalogue/agent-state.ts': "import { mounts } from '../../agent/agent.ts';\nexport const n = mounts.length;\n",
  // a cycle of two modules
  'shared/orchestrator/ping.ts': "import { pong } from './pong.ts';\nexport const ping = (): number => pong() + 1;\n",
  'shared/orchestrator/pong.ts': "import { ping } from './ping.ts';\nexport const pong = (): number => ping() - 1;\n",
  // folders in a cycle without modules in one: the catalogue importing the orchestrator, which imports it
  'shared/catalogue/runs.ts': "import { run } from '../orchestrator/run.ts';\nexport const runs = () => run();\n",
  // the whole core object below runtime.ts (narrow deps instead), and a leaf importing a folder
  'shared/db/whole-core.ts': "import { wireFilestore } from '../runtime.ts';\nexport const w = wireFilestore;\n",
  'shared/paths.ts': "import { listMounts } from './catalogue/index.ts';\nexport const n = listMounts().length;\n",
  // a shell past shared/'s entry files (a type-only import counts too)
  'agent/deep.ts': "import type { Mount } from '../shared/catalogue/types.ts';\nexport const none: Mount[] = [];\n",
  // the agent and the Lambdas importing each other
  'agent/lambda-config.ts': "import { fail } from '../lambdas/support/config.ts';\nexport const f = fail;\n",
  'lambdas/from-agent.ts': "import { mounts } from '../agent/agent.ts';\nexport const m = mounts;\n",
  // the reconcile worker and another runtime importing each other
  'reconcile-worker/from-agent.ts': "import { mounts } from '../agent/agent.ts';\nexport const m = mounts;\n",
  'agent/from-worker.ts': "import { fail } from '../reconcile-worker/main.ts';\nexport const f = fail;\n",
  // the CDK app importing runtime code
  'cdk/core.ts': "import { wireFilestore } from '../shared/runtime.ts';\nexport const w = wireFilestore;\n",
};

const EXPECTED = [
  'agent-not-lambdas: agent/lambda-config.ts',
  'cdk-no-runtime: cdk/core.ts',
  'lambdas-not-agent: lambdas/from-agent.ts',
  'runtimes-not-worker: agent/from-worker.ts',
  'worker-not-runtimes: reconcile-worker/from-agent.ts',
  'no-circular-folders: shared/catalogue',
  'no-circular-folders: shared/orchestrator',
  'no-circular: shared/orchestrator',
  'leaves-at-the-bottom: shared/paths.ts',
  'runtime-on-top: shared/db/whole-core.ts',
  'shared-imports-no-shell: shared/catalogue/agent-state.ts',
  'shells-through-entry-files: agent/deep.ts',
].sort();

let scratch: string;

async function writeTree(files: Record<string, string>): Promise<void> {
  for (const [name, text] of Object.entries(files)) {
    await mkdir(path.join(scratch, path.dirname(name)), { recursive: true });
    await writeFile(path.join(scratch, name), text);
  }
}

beforeAll(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'filestore-layers-'));
  const tsconfig = JSON.parse(await readFile(path.join(ROOT, 'tsconfig.json'), 'utf8')) as { compilerOptions: unknown };
  await writeFile(path.join(scratch, 'tsconfig.json'), JSON.stringify({ compilerOptions: tsconfig.compilerOptions, include: ['**/*.ts'] }));
  await writeTree(CLEAN);
});

afterAll(async () => {
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('the layers (npm run lint:deps)', () => {
  it('the repository obeys them', async () => {
    const { code, out } = await lintDeps(ROOT);
    expect(violations(out)).toEqual([]);
    expect(out).toContain('no dependency violations found');
    expect(code).toBe(0);
  });

  it('a tree laid out the same way with only allowed imports passes', async () => {
    const { code, out } = await lintDeps(scratch);
    expect(violations(out)).toEqual([]);
    expect(code).toBe(0);
  });

  it('each forbidden import fails the check, named by its rule', async () => {
    await writeTree(FORBIDDEN);
    try {
      const { code, out } = await lintDeps(scratch);
      expect(violations(out)).toEqual(EXPECTED);
      expect(code).not.toBe(0);
    } finally {
      for (const name of Object.keys(FORBIDDEN)) await rm(path.join(scratch, name), { force: true });
    }
  });
});
