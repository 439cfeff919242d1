// What the long-running processes (agent/, reconcile-worker/, `filestore start`) share about being a process: how they stop.
export { REPEAT_WINDOW_MS, stopOnSignals, type StopOnSignalsOptions } from './signals.ts';
