export { AdminServer, AdminTokenError, readToken } from './server.js';
export type { AdminHooks } from './server.js';
