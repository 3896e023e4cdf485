// SIGIL_UNSAFE_TEST_WEAKEN: switches off named security checks, for one purpose only: proving
// that `sigil probe` detects what it claims to detect (a probe that passes a deliberately broken
// sidecar would prove nothing). Never set in production. A sidecar that has it logs a warning at
// start, shows it in /status (`unsafeTestWeakening`), and `sigil probe --admin` reports it.
// Unknown names are refused, so a typo cannot leave a tester believing a check is off.

export const UNSAFE_TEST_WEAKEN_ENV = 'SIGIL_UNSAFE_TEST_WEAKEN';

export const WEAKENINGS = {
  /** Inbound keeps incoming x-sigil-* / XFCC copies (it still sets its own values). */
  'identity-headers': 'incoming identity headers are not stripped',
  /** A peer SVID is accepted if any trust domain's bundle verifies its chain (bundle pooling). */
  'trust-domain-pooling': "peer chains are verified against every trust domain's bundle",
  /** Bus deliveries skip the replay checks (the window, and signed-before-subscription). */
  'bus-replay': 'bus messages are not checked for replay',
  /** Delegation tokens are accepted whoever presents them (no actor = mTLS peer check). */
  'delegation-actor': 'delegation tokens are not bound to the presenting agent',
} as const;

export type Weakening = keyof typeof WEAKENINGS;

export class UnsafeWeakeningError extends Error {
  readonly code = 'unsafe_weakening_invalid';
}

/** The weakenings an env value names (comma-separated); empty or unset → none. */
export function parseUnsafeTestWeakening(value: string | undefined): ReadonlySet<Weakening> {
  const names = (value ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const name of names) {
    if (!Object.hasOwn(WEAKENINGS, name)) {
      throw new UnsafeWeakeningError(`${UNSAFE_TEST_WEAKEN_ENV}: unknown weakening "${name}" (known: ${Object.keys(WEAKENINGS).join(', ')})`);
    }
  }
  return new Set(names as Weakening[]);
}
