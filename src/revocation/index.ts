// Public surface of the kill switch (docs/revocation.md).
export { REVOCATION_KINDS, RevocationInputError, entryToJson, isEntryId, parseRevocationEntry, svidKeys } from './entry.js';
export type { RevocationEntry, RevocationEntryJson, RevocationKind } from './entry.js';
export { RevocationSet } from './set.js';
export { LiveRegistry, revokedBy } from './registry.js';
export type { LiveKind, LiveWork } from './registry.js';
export { RECORD_TYP, RecordError, createRecordSigner, createRecordVerifier, parseRecordData, recordData, recordSubject, signRecord, verifyRecord } from './record.js';
export type { RevocationRecord, VerifiedRecord } from './record.js';
export { RevocationFileError, RevocationFileSource, parseRevocationFile } from './file-source.js';
export { RevocationFeed } from './nats-feed.js';
export { RevocationRefusedError, Revocations } from './service.js';
export type { ApplyResult, RevocationSettings, RevocationSource, RevocationsDeps, RevokeOutcome } from './service.js';
