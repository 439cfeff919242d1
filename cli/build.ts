// `npm run build`: the CLI bundled into dist/filestore.js (see bundle.ts).
import { bundleCli } from './bundle.ts';

await bundleCli();
