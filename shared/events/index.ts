// What the shells may use of events: the outbox's retention settings (the Lambdas' config).
export { OutboxRetention } from './retention.ts';
