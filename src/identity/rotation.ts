/**
 * When to renew an SVID: at half its lifetime, jittered by ±10% of the lifetime so that a
 * fleet started together does not renew together. Pure so the schedule can be tested.
 */
export function renewalDelayMs(notBefore: Date, notAfter: Date, now: number, random: () => number = Math.random): number {
  const lifetime = notAfter.getTime() - notBefore.getTime();
  const fraction = 0.5 + (random() * 0.2 - 0.1);
  const renewAt = notBefore.getTime() + lifetime * fraction;
  return Math.max(0, Math.round(renewAt - now));
}

/** Delay before retrying a failed renewal: short, and never past the SVID's expiry. */
export function retryDelayMs(notAfter: Date, now: number): number {
  return Math.max(100, Math.min(5_000, Math.floor((notAfter.getTime() - now) / 4)));
}
