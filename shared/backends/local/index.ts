// What the shells may use of the local backend: the root checks (the agent) and the walker's file
// name (the build, which ships it beside the bundle).
export { anotherRootReason, lookAtRoot, symlinkedRootNote, type RootLook } from './root-check.ts';
export { WALKER_FILE } from './walker.ts';
