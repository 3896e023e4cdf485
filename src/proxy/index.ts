export { InboundProxy } from './inbound.js';
export type { InboundOptions } from './inbound.js';
export { OutboundProxy } from './outbound.js';
export type { OutboundOptions } from './outbound.js';
export { xfccValue, XFCC_HEADER, PEER_ID_HEADER } from './headers.js';
export { RouteTable, splitAuthority } from './routes.js';
export { listen } from './http-common.js';
export type { HandshakeObservation } from './http-common.js';
