// The layers of docs/architecture.md, checked: `npm run lint:deps` (CI runs it beside the type
// check; tests/layers.test.ts shows that a forbidden import fails it).
const SHELLS = '^(agent|reconcile-worker|lambdas|cli)/';
// A shell reaches shared/ through its entry files only: index.ts in a folder (what shells may
// use), or index-<part>.ts where a heavy part (the core, BullMQ, the HTTP server) is kept apart.
const ENTRY = '/index[.]ts$|/index-[a-z0-9-]+[.]ts$';
// What the CDK app may import besides its own files and packages: the build's esbuild options,
// and the mount-name constants its configuration checks (both import nothing of the runtime).
const CDK_ALLOWED = '^(cli/build-options\\.ts|shared/catalogue/mount-names\\.ts)$';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'Modules import each other in a cycle: move the shared part (often a type) below both.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-circular-folders',
      comment: 'Folders import each other in a cycle: each folder has one direction (docs/architecture.md, the layers).',
      severity: 'error',
      scope: 'folder',
      from: { path: '^shared/' },
      to: { circular: true },
    },
    {
      name: 'runtime-on-top',
      comment: 'shared/runtime.ts wires the core: below it, code takes narrow deps (e.g. reconcile/core.ts), not the whole Filestore; only api/ (which serves it) and the entry files name it.',
      severity: 'error',
      from: { path: '^shared/', pathNot: '^shared/api/|^shared/index-runtime[.]ts$' },
      to: { path: '^shared/runtime[.]ts$' },
    },
    {
      name: 'leaves-at-the-bottom',
      comment: "shared/'s leaf modules (errors, paths, json-value, package) import none of its folders.",
      severity: 'error',
      from: { path: '^shared/(errors|paths|json-value|package)[.]ts$' },
      to: { path: '^shared/[^/]+/' },
    },
    {
      name: 'shared-imports-no-shell',
      comment: 'shared/ is the core: it imports none of the processes built on it.',
      severity: 'error',
      from: { path: '^shared/' },
      to: { path: '^(agent|reconcile-worker|lambdas|cli|cdk)/' },
    },
    {
      name: 'shells-through-entry-files',
      comment: 'agent/, lambdas/ and cli/ import shared/ through its entry files (index.ts, index-<part>.ts): add what you need there.',
      severity: 'error',
      from: { path: SHELLS },
      to: { path: '^shared/', pathNot: ENTRY },
    },
    {
      name: 'lambdas-not-agent',
      comment: 'The Lambdas and the agent are separate runtimes: what both need lives in shared/.',
      severity: 'error',
      from: { path: '^lambdas/' },
      to: { path: '^agent/' },
    },
    {
      name: 'agent-not-lambdas',
      comment: 'The Lambdas and the agent are separate runtimes: what both need lives in shared/.',
      severity: 'error',
      from: { path: '^agent/' },
      to: { path: '^lambdas/' },
    },
    {
      name: 'worker-not-runtimes',
      comment: 'The reconcile worker is a runtime of its own: what it shares with the agent or the Lambdas lives in shared/ (cli/ dispatches to it, not the other way).',
      severity: 'error',
      from: { path: '^reconcile-worker/' },
      to: { path: '^(agent|lambdas|cli)/' },
    },
    {
      name: 'runtimes-not-worker',
      comment: 'The agent and the Lambdas do not import the reconcile worker: what both need lives in shared/.',
      severity: 'error',
      from: { path: '^(agent|lambdas)/' },
      to: { path: '^reconcile-worker/' },
    },
    {
      name: 'cdk-no-runtime',
      comment: 'The CDK app deploys the bundles; it imports no runtime code (the esbuild options and the mount-name constants excepted).',
      severity: 'error',
      from: { path: '^cdk/' },
      to: { path: '^(shared|agent|reconcile-worker|lambdas|cli)/', pathNot: CDK_ALLOWED },
    },
    {
      name: 'cdk-allowed-imports-nothing',
      comment: 'What cdk/ may import stays free of runtime code itself.',
      severity: 'error',
      from: { path: CDK_ALLOWED },
      to: { path: '^(shared|agent|reconcile-worker|lambdas|cli)/' },
    },
  ],
  options: {
    // tests/ and bench/ import what they test; they are not cruised.
    includeOnly: '^(shared|agent|reconcile-worker|lambdas|cli|cdk)/',
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    // Type-only imports count: a layer is a layer for types too.
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: ['.ts', '.js', '.json'] },
    skipAnalysisNotInRules: true,
  },
};
