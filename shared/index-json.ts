// JSON checks (shared/json-value.ts) for the shells: apart from index.ts (see there).
export { hasLoneSurrogate } from './json-value.ts';
