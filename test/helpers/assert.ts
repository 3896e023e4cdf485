// Assertions shared by the integration suites, typed structurally so they accept any tap Test.
import type { HttpResult } from './clients.js';

export interface Asserts {
  fail(message: string): unknown;
  not(found: unknown, wanted: unknown, message: string): unknown;
  equal(found: unknown, wanted: unknown, message: string): unknown;
  match(found: unknown, pattern: unknown, message: string): unknown;
  notMatch(found: unknown, pattern: unknown, message: string): unknown;
  same(found: unknown, wanted: unknown, message: string): unknown;
  ok(value: unknown, message: string): unknown;
}

export type HttpResponse = Extract<HttpResult, { gotHttpResponse: true }>;

/** Refused means: no HTTP response at all, and the connection was actively ended (not a hang). */
export function assertRefused(t: Asserts, r: HttpResult, what: string): void {
  if (r.gotHttpResponse) {
    t.fail(`${what}: expected no HTTP response, got ${r.status} ${r.body.slice(0, 200)}`);
    return;
  }
  t.not(r.code, 'TIMEOUT', `${what}: refused without HTTP response (${r.code ?? ''} ${r.error})`);
}

/** Asserts a response with `status` (200 by default) arrived; throws if none did. */
export function assertStatus(t: Asserts, r: HttpResult, what: string, status = 200): asserts r is HttpResponse {
  if (!r.gotHttpResponse) throw new Error(`${what}: expected ${status}, got no response: ${r.code ?? ''} ${r.error}`);
  t.equal(r.status, status, `${what}: ${status} (${r.body.slice(0, 300)})`);
}

/** A JSON refusal from the proxy: status and `{error, reason}`. */
export function assertJsonError(t: Asserts, r: HttpResult, what: string, status: number, error: string, reason: string): void {
  assertStatus(t, r, what, status);
  t.match(r.headers['content-type'], /application\/json/, `${what}: JSON`);
  t.match(r.json, { error, reason }, `${what}: ${error}/${reason}`);
}
