// The walker process's program (walker.ts starts it; the build bundles it into walker.cjs).
import { serveWalkerSessions } from './walker-process.ts';

serveWalkerSessions();
