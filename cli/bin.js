#!/usr/bin/env node
// The `filestore` command: loads the TypeScript CLI through tsx (no build step).
import { register } from 'tsx/esm/api';

register();
await import('./index.ts');
