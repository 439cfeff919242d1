// The long-running processes' configuration from the environment (zod schemas built at load):
// apart from index.ts, which light importers use.
export { loadConfig, type Config } from './config.ts';
