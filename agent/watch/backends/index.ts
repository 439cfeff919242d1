import type { WatchBackend, WatchBackendFactory, WatchBackendKind, WatchHandlers } from '../types.ts';
import { ChokidarBackend } from './chokidar.ts';
import { DirsBackend } from './dirs.ts';
import { ParcelBackend } from './parcel.ts';

export { ChokidarBackend } from './chokidar.ts';
export { DirsBackend } from './dirs.ts';
export { ParcelBackend } from './parcel.ts';
export { autoThreshold, chooseBackend, countTree, AUTO_BUDGET_SHARE, AUTO_MAX_THRESHOLD, type BackendDecision } from './choose.ts';
export { classifyProblem } from './problems.ts';

/** The default factory: the real backend of that kind. */
export const createWatchBackend: WatchBackendFactory = (kind: WatchBackendKind, root: string, handlers: WatchHandlers): WatchBackend =>
  kind === 'chokidar' ? new ChokidarBackend(root, handlers) : kind === 'dirs' ? new DirsBackend(root, handlers) : new ParcelBackend(root, handlers);
