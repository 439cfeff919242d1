// The package's version (shared/package.ts), for the CLI's main chunk: apart from index.ts, so that
// what every command loads first stays this one small module.
export { packageVersion } from './package.ts';
