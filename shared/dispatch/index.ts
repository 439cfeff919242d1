// What the shells may use of command dispatch: the signing secrets (light; the Lambdas' config).
// The agent's side (presence, the command worker) is in index-agent.ts.
export { AgentIdInUseError } from './errors.ts';
export { COMMAND_SECRET_MIN_LENGTH, MISSING_SECRET_MESSAGE, parseCommandSecrets } from './signing.ts';
