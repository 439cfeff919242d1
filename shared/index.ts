// What the shells (agent/, lambdas/, cli/) may use of shared/'s top level: the errors. The rest has
// entries of its own, so that an importer loads only what it uses (esbuild keeps a module's
// top-level code once anything imports it): index-runtime.ts (the core object), index-config.ts
// (the processes' configuration), index-package.ts (the version), index-paths.ts (path helpers),
// index-json.ts (JSON checks). The layers and the rule: docs/architecture.md.
export { asFilestoreError, FilestoreError, InvalidPathError, type ErrorCode } from './errors.ts';
export type { MaintenanceReport } from './maintenance.ts';
