// The HTTP server (the app and every route) for the processes that serve it: apart from index.ts,
// which light importers (the token command) use.
export { serveApi, type ApiServer } from './serve.ts';
