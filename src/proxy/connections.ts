// Tracks live sockets of a listener so shutdown can drain them: stop accepting, let in-flight
// requests finish up to a deadline, then cut whatever is left.
import type { Socket } from 'node:net';

export class ConnectionTracker {
  private readonly sockets = new Set<Socket>();

  add(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  /** Live sockets, for re-checking them against a new policy. */
  [Symbol.iterator](): IterableIterator<Socket> {
    return this.sockets.values();
  }

  get size(): number {
    return this.sockets.size;
  }

  /**
   * Resolves once every tracked socket closed or `timeoutMs` passed; then destroys the rest.
   * `closeIdle` runs on every tick because a keep-alive connection becomes idle only when its
   * in-flight request finishes.
   */
  async drain(timeoutMs: number, closeIdle: () => void = () => {}): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.sockets.size > 0 && Date.now() < deadline) {
      closeIdle();
      await new Promise((r) => setTimeout(r, 25));
    }
    for (const s of this.sockets) s.destroy();
  }
}
