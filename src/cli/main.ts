#!/usr/bin/env node
// `sigil <command>`: dispatches to one file per command.
// Commands are imported on demand: `sigil ca` and `sigil help` should not pay for loading the
// whole sidecar (Cedar's WASM, the proxy stack).
import { CliUsageError } from './args.js';

const USAGE = `usage: sigil <command> [options]

commands:
  run [--config FILE]                           run the sidecar (config path default: $SIGIL_CONFIG)
  config check [FILE] [--json] [--schema-only]  validate a sidecar config (SIGIL_* overrides applied) and
                                                print the effective configuration, secrets redacted
  health [--config FILE | --url URL]            exit 0 when the sidecar's admin /healthz answers 200
         [--broker --config FILE]               ... or the broker's
  broker --config FILE                          run the RFC 8693 token-exchange broker
  broker keygen --dir DIR                       add a broker signing key (key rotation)
  ca init --trust-domain TD --dir DIR [--force | --if-missing]
                                                create a development CA
  ca issue --dir DIR --spiffe-id ID [--ttl 15m] --out OUT
                                                issue an X.509-SVID from a development CA
  revoke --admin URL (--agent ID|PATTERN | --svid SERIAL|sha256:FINGERPRINT | --task ID | --token JTI
         | --user SUB | --trust-domain TD) [--reason TEXT] [--ttl DURATION | --expires ISO] [--by NAME] [--json]
                                                the kill switch: revoke on a sidecar's admin API
  revoke --admin URL --list [--token-file F] [--json]
                                                list the revocations in force
  revoke --admin URL --lift ID [--by NAME] [--json]
                                                lift a revocation (sigil revoke --help for details)
  probe --target HOST:PORT --cert F --key F --bundle F [options]
                                                the impersonation test suite (sigil probe --help)
  demo                                          end-to-end demo on loopback (no external servers)
  dev-idp init --dir DIR [--issuer URL]         DEV ONLY: create a stand-in identity provider
  dev-token --dir DIR --sub USER --scope "a b" --aud AUD [--ttl 1h] [--may-act ID ...]
                                                DEV ONLY: mint a user access token with it
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run':
      return (await import('./run.js')).runSidecar(rest);
    case 'ca':
      return (await import('./ca.js')).runCa(rest);
    case 'config':
      return (await import('./config-check.js')).runConfig(rest);
    case 'health':
      return (await import('./health.js')).runHealth(rest);
    case 'broker':
      return (await import('./broker.js')).runBroker(rest);
    case 'dev-idp':
      return (await import('./dev-token.js')).runDevIdp(rest);
    case 'dev-token':
      return (await import('./dev-token.js')).runDevToken(rest);
    case 'revoke':
      return (await import('./revoke.js')).runRevoke(rest);
    case 'probe':
      return (await import('./probe.js')).runProbeCommand(rest);
    case 'demo':
      return (await import('./demo.js')).runDemo(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`sigil: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof CliUsageError) {
      process.stderr.write(`sigil: ${err.message}\n\n${USAGE}`);
      process.exitCode = 2;
      return;
    }
    const e = err as Error & { code?: string };
    process.stderr.write(`sigil: ${e.code ? `[${e.code}] ` : ''}${e.message}\n`);
    process.exitCode = 1;
  },
);
