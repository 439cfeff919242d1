/**
 * PostgreSQL through RDS Proxy with IAM auth: one implementation for every runtime, in
 * shared/db/iam-auth.ts (the agent and the CLI's processes use it too). The Lambdas' modules
 * import it from here.
 */
export { iamConnectionAuth, prepareDatabase, type TokenSigner } from '../../shared/db/index.ts';
