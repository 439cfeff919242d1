// Migrations (node-pg-migrate and what it loads), apart from index.ts: the Lambdas' shared
// configuration imports index.ts, and only the processes that migrate load this.
export { migrate, MIGRATIONS } from './migrate.ts';
