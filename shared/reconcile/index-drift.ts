// Drift detection, for the agent's watchers: apart from index.ts (the reconcile worker does not load it).
export { driftObserverFor, type DriftObserver } from './drift-observer.ts';
export { detectDrift, type DriftResult } from './drift.ts';
