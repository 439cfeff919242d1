// What the shells may use of the database layer: the pool, the choice of database, IAM auth.
// Migrations are in index-migrate.ts (node-pg-migrate), for the processes that migrate.
export { DATABASE_CHOICE, DATABASE_ENV, resolveDatabase, type DatabaseConfig, type IamDatabaseAuth } from './database-env.ts';
export { iamConnectionAuth, prepareDatabase, readyDatabase, type TokenSigner } from './iam-auth.ts';
export { connectionConfig, createPool, type Pool, type Queryable } from './pool.ts';
