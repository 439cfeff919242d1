// Catalogue path helpers (shared/paths.ts) for the shells: apart from index.ts (see there).
export { ancestorsOf, isSameOrDescendant, joinPath, normalizePath, parentOf, STAGING_DIR } from './paths.ts';
