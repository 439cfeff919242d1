// `npm run build`: the CLI bundled into dist/filestore.js, and each Lambda handler into dist/lambdas/<name>.mjs (see bundle.ts).
import { bundleCli, bundleLambdas } from './bundle.ts';

await Promise.all([bundleCli(), bundleLambdas()]);
