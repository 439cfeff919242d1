// The typed client as a package export (`filestore/client`, package.json "exports"): plain
// JavaScript for Node's ESM loader and declarations for TypeScript, in dist/client/.
// Run by `npm run build` and before `npm pack` (package.json "prepack"); not by `npm start`,
// which needs neither (the declarations take a few seconds to emit).
//
//   dist/client/index.js         shared/client/index.ts bundled by esbuild: one ES module,
//                                Node built-ins only (the client imports no packages at run time)
//   dist/client/types/**.d.ts    tsc's declarations of shared/client/ and of what its types
//                                come from (shared/api/schemas.ts: zod schemas, so `zod` types)
//
// tests/client-package.test.ts packs the package, installs the tarball in an empty directory
// and uses it from an .mjs (node) and a .ts (tsc, moduleResolution NodeNext).
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import ts from 'typescript';
import { NODE_TARGETS } from './build-options.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const CLIENT_DIST_DIR = join(ROOT, 'dist/client');
const ENTRY = join(ROOT, 'shared/client/index.ts');

/** The client's JavaScript: one self-contained ES module. */
async function bundleClientCode(outdir: string): Promise<void> {
  const result = await build({
    entryPoints: { index: ENTRY },
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: NODE_TARGETS.local,
    keepNames: true,
    // Type-only imports (zod, the schemas) are erased; anything else would be a package the
    // tarball's user must have: refuse it here rather than ship an import that fails.
    packages: 'external',
    metafile: true,
    logLevel: 'warning',
  });
  const imports = Object.values(result.metafile.outputs).flatMap((o) => o.imports.filter((i) => i.external && !i.path.startsWith('node:')).map((i) => i.path));
  if (imports.length > 0) throw new Error(`the client imports packages at run time (${[...new Set(imports)].join(', ')}): it must need Node's built-ins only`);
}

/** The client's declarations (tsc), with `.js` specifiers so that NodeNext resolves them anywhere. */
function emitClientDeclarations(outDir: string): void {
  const program = ts.createProgram([ENTRY], {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    skipLibCheck: true,
    allowImportingTsExtensions: true,
    rewriteRelativeImportExtensions: true,
    declaration: true,
    emitDeclarationOnly: true,
    rootDir: join(ROOT, 'shared'),
    outDir,
    types: ['node'],
  });
  // tsc keeps the sources' `./x.ts` specifiers in declarations; a consumer without
  // allowImportingTsExtensions needs the `.js` ones (which NodeNext maps to `./x.d.ts`).
  const write: ts.WriteFileCallback = (file, text, bom) => ts.sys.writeFile(file, text.replace(/(from\s+['"]\.{1,2}\/[^'"]+)\.ts(['"])/g, '$1.js$2'), bom);
  const { diagnostics } = program.emit(undefined, write);
  const errors = [...ts.getPreEmitDiagnostics(program), ...diagnostics].filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errors.length > 0) {
    const host = { getCanonicalFileName: (f: string) => f, getCurrentDirectory: () => ROOT, getNewLine: () => '\n' };
    throw new Error(`client declarations:\n${ts.formatDiagnostics(errors, host)}`);
  }
}

export async function buildClient(outdir: string = CLIENT_DIST_DIR): Promise<void> {
  await rm(outdir, { recursive: true, force: true });
  await mkdir(outdir, { recursive: true });
  await bundleClientCode(outdir);
  emitClientDeclarations(join(outdir, 'types'));
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await buildClient();
