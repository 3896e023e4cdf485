import t from 'tap';
import { renewalDelayMs } from '../../src/identity/index.js';

t.test('renewal lands at 50% of the lifetime ±10% jitter', async (t) => {
  const notBefore = new Date(1_000_000);
  const notAfter = new Date(1_000_000 + 900_000); // 15 min
  t.equal(renewalDelayMs(notBefore, notAfter, notBefore.getTime(), () => 0.5), 450_000, 'no jitter: exactly half');
  t.equal(renewalDelayMs(notBefore, notAfter, notBefore.getTime(), () => 0), 360_000, 'lowest: 40%');
  t.equal(renewalDelayMs(notBefore, notAfter, notBefore.getTime(), () => 0.999999), 540_000, 'highest: 60%');
  for (let i = 0; i < 200; i++) {
    const d = renewalDelayMs(notBefore, notAfter, notBefore.getTime());
    if (d < 360_000 || d > 540_000) t.fail(`delay ${d} outside [40%, 60%]`);
  }
  t.equal(renewalDelayMs(notBefore, notAfter, notAfter.getTime()), 0, 'overdue renews at once');
});
