// What the shells may use of the orchestrator: which mounts this process executes, the staging sweep.
export { executesHere } from './ownership.ts';
export { sweepStaging } from './staging-sweep.ts';
