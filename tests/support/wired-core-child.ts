/**
 * A process that builds the core as a Lambda does (wireFilestore, in-process events), runs one
 * command, gives a would-be relay or maintenance timer time to act, reports, closes only the
 * pool and then leaves the process to end by itself: anything else still holding the event
 * loop (a relay loop, a maintenance timer, a consumer) keeps it alive.
 * Usage: TEST_DATABASE_URL=… MOUNT=<local mount key> tsx wired-core-child.ts
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { wireFilestore } from '../../shared/runtime.ts';
import { TEST_DATABASE_URL } from './env.ts';

const core = await wireFilestore({ databaseUrl: TEST_DATABASE_URL, redisUrl: 'inline', poolSize: 2 });
const result = await core.orchestrator.mkdir(process.env.MOUNT as string, { path: 'made-by-a-wired-core' });
// A relay that ran (a nudge after the commit, its poll) would have published within this.
await sleep(300);
console.log(JSON.stringify({ result, resources: process.getActiveResourcesInfo() }));
await core.pool.end();
