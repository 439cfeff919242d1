// The agent's side of dispatch: its presence row and the worker that runs commands sent to it.
export { startAgentPresence, type AgentPresence } from './presence.ts';
export { startCommandWorker, type CommandWorker } from './worker.ts';
