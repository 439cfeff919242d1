// The core object (runtime.ts) for the shells: everything the core runs comes with it, so it has
// an entry of its own (index.ts stays light). docs/architecture.md, the layers.
export { startServices, wireFilestore, type Filestore, type FilestoreOptions } from './runtime.ts';
