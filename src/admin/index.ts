export { AdminServer } from './server.js';
export type { AdminHooks } from './server.js';
