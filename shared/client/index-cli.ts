// What the CLI uses of the client beyond the package's entry (index.ts, the published API): kept
// out of the package's exports.
export { isUnreachable } from './errors.ts';
