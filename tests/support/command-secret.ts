import { randomBytes } from 'node:crypto';

/**
 * FILESTORE_COMMAND_SECRET of the test deployments: API processes sign the commands they put
 * on an agent's queue with it, agents verify them. One per test process (agent processes it
 * spawns get it through their environment), as one deployment shares one.
 */
export const TEST_COMMAND_SECRET: string = randomBytes(32).toString('hex');
