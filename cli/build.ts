// `npm run build`: the CLI bundled into dist/filestore.js, and each Lambda handler into dist/lambdas/<name>.mjs (see bundle.ts).
// `npm run build:cli` (`tsx cli/build.ts cli`; package.json "prepare" on `npm install` in a clone): the CLI bundle only.
import { bundleCli, bundleLambdas } from './bundle.ts';

const only = process.argv[2];
if (only !== undefined && only !== 'cli') throw new Error(`cli/build.ts: unknown argument "${only}" (none: everything; cli: the CLI bundle only)`);
await Promise.all([bundleCli(), only === 'cli' ? null : bundleLambdas()]);
