// Public surface of the message envelope: JWS-signed bus messages (docs/envelope.md).
// Pure: no fs, no net, no timers, no logging; the clock is a parameter.
export { ENVELOPE_TYP, DEFAULT_TTL_SECONDS, DEFAULT_MAX_TTL_SECONDS, DEFAULT_LEEWAY_SECONDS, DEFAULT_MAX_BYTES, DEFAULT_CACHE_LIMIT } from './format.js';
export { ENVELOPE_ALGORITHMS } from './algorithms.js';
export type { EnvelopeAlgorithm } from './algorithms.js';
export { EnvelopeError } from './errors.js';
export type { EnvelopeReason } from './errors.js';
export { createEnvelopeSigner } from './signer.js';
export type { EnvelopeSigner, EnvelopeSignerOptions, SignInput, SignedEnvelope } from './signer.js';
export { EnvelopeVerifier } from './verifier.js';
export type { EnvelopeVerifierOptions, SignerInfo, VerifiedEnvelope, VerifyContext } from './verifier.js';
export { ReplayWindow } from './replay.js';
