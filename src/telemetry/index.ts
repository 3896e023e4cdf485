export { createLogger, silentLogger } from './logger.js';
export type { Logger, LogLevel, LoggerOptions } from './logger.js';
export { BrokerMetrics, RevocationMetrics, SigilMetrics } from './metrics.js';
export type { MetricsOptions, Reporter, RequestProtocol, DecisionLabel, RequestObservation } from './metrics.js';
export { AuditLog, AUDIT_DEFAULTS, auditLine, busRejectionLine, openAuditFile } from './audit.js';
export type { AuditLine, AuditLogOptions, BusRejectionAudit, AuditResource, AuditStats, AuditStreamFactory } from './audit.js';
export { childTraceparent, formatTraceparent, newRequestId, newTraceparent, parseTraceparent } from './trace.js';
export type { NewTraceOptions, TraceContext } from './trace.js';
