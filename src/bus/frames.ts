// Signed WebSocket streams: on the sidecar-to-sidecar hop of a relayed WebSocket, every frame is
// wrapped in a Sigil envelope signed by the sending sidecar's SVID and verified and unwrapped by
// the receiving sidecar, so each frame (not only the connection) is attributable to its sender.
// The agents on both ends see plain frames. Negotiated per stream with SIGNED_FRAMES_HEADER on
// the upgrade (docs/bus.md, "Signed WebSocket streams").
import type { ReasonCode } from '../authz/index.js';
import type { IdentitySnapshot } from '../identity/index.js';
import type { SpiffeId } from '../spiffe/index.js';
import { createEnvelopeSigner, EnvelopeError, EnvelopeVerifier, ReplayWindow, type EnvelopeSigner, type SignerInfo } from './envelope/index.js';

/** Sent by the dialing sidecar on the upgrade; its value is the framing version. */
export const SIGNED_FRAMES_HEADER = 'x-sigil-signed-frames';
export const SIGNED_FRAMES_VERSION = 'v1';

/** Frames one stream may have in flight inside the replay window before it is closed. */
const STREAM_REPLAY_ENTRIES = 100_000;

export type Side = 'client' | 'server';

export type OpenedFrame = { data: Buffer; isBinary: boolean } | { refused: ReasonCode; detail: string };

/** The envelope layer of one stream; `peerSide` is the side of the relay facing the other sidecar. */
export interface FrameCodec {
  readonly peerSide: Side;
  /** Wraps a plain frame for the peer (a text frame holding the envelope). */
  seal(data: Buffer, isBinary: boolean): string;
  /** Verifies and unwraps a frame from the peer, or says why it is refused. */
  open(data: Buffer, isBinary: boolean): OpenedFrame;
}

export interface FrameSigningOptions {
  identity: () => IdentitySnapshot | undefined;
  ttlSeconds: number;
  maxTtlSeconds: number;
  leewaySeconds: number;
  maxBytes: number;
  trustEpoch?: () => number;
  /** The frame signer's SVID is revoked: the frame is refused (`svid_revoked`). */
  isRevoked?: (signer: SignerInfo) => boolean;
}

/** The subject of a stream's frames: binds each frame to the request path it was sent on. */
export function streamSubject(path: string): string {
  return `ws:${path}`;
}

export class FrameSigning {
  private readonly verifier: EnvelopeVerifier;
  private signer: EnvelopeSigner | undefined;
  private signerSerial: string | undefined;

  constructor(private readonly options: FrameSigningOptions) {
    this.verifier = new EnvelopeVerifier({ maxBytes: options.maxBytes, leewaySeconds: options.leewaySeconds, maxTtlSeconds: options.maxTtlSeconds });
  }

  /** The codec of one stream with the verified peer `peer`, on request path `path`. */
  codec(peerSide: Side, peer: SpiffeId, path: string): FrameCodec {
    const subject = streamSubject(path);
    const audience = [peer.toString()];
    const replay = new ReplayWindow({ maxEntries: STREAM_REPLAY_ENTRIES });
    return {
      peerSide,
      seal: (data, isBinary) => {
        const signer = this.currentSigner();
        return signer.sign(isBinary ? { subject, bytes: data, audience } : { subject, data: data.toString('utf8'), audience }, Date.now()).jws;
      },
      open: (data, isBinary) => {
        if (isBinary) return { refused: 'envelope_malformed', detail: 'a signed stream carries envelopes in text frames' };
        const own = this.options.identity();
        if (!own) return { refused: 'svid_unavailable', detail: 'no own identity' };
        try {
          const v = this.verifier.verify(data.toString('utf8'), {
            bundles: own.bundles,
            self: own.svid.id,
            ...(this.options.trustEpoch ? { trustEpoch: this.options.trustEpoch() } : {}),
            ...(this.options.isRevoked ? { isRevoked: this.options.isRevoked } : {}),
          });
          // The frame must come from the sidecar at the other end of this very connection.
          if (!v.signer.id.equals(peer)) return { refused: 'issuer_mismatch', detail: `signed by ${v.signer.id.toString()}, not the connection's peer` };
          if (v.subject !== subject) return { refused: 'subject_mismatch', detail: 'signed for another stream path' };
          // Remembered only once everything else passed, so a refused frame never fills the window.
          const seen = replay.checkAndRecord(v.signer.id.toString(), v.jti, v.exp * 1000 + this.options.leewaySeconds * 1000, Date.now());
          if (seen !== 'recorded') return { refused: 'replay', detail: seen };
          if (v.bytes !== undefined) return { data: v.bytes, isBinary: true };
          if (typeof v.data !== 'string') return { refused: 'envelope_malformed', detail: 'a text frame envelope carries a string' };
          return { data: Buffer.from(v.data, 'utf8'), isBinary: false };
        } catch (err) {
          if (err instanceof EnvelopeError) return { refused: err.code, detail: err.detail };
          return { refused: 'internal_error', detail: 'verification error' };
        }
      },
    };
  }

  private currentSigner(): EnvelopeSigner {
    const own = this.options.identity();
    if (!own) throw new Error('no SVID to sign frames with');
    if (own.svid.serial !== this.signerSerial || !this.signer) {
      this.signer = createEnvelopeSigner(own.svid, { defaultTtlSeconds: this.options.ttlSeconds });
      this.signerSerial = own.svid.serial;
    }
    return this.signer;
  }
}
