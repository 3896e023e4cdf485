#!/bin/sh
# DEV ONLY. The `ca-init` service: prepares the shared state of the Compose example in its named
# volumes, then exits. It runs on every `docker compose up` and keeps what is already there, so
# identities survive restarts; `docker compose down -v` starts from scratch.
#
#   CA_DIR         the dev CA (`sigil ca init`): every sidecar and the broker issue their own
#                  SVIDs from it (identity.dev) and trust its bundle.
#   IDP_DIR        the dev identity provider (`sigil dev-idp init`) that stands in for your
#                  login service: user-login mints alice's token with it, the broker trusts it.
#   NATS_TLS_DIR   nats-server's TLS certificate, issued from the dev CA for host name "nats",
#                  and the bundle it checks client certificates against.
#   ADMIN_DIR      the admin token (admin.tokenFile) guarding the changing admin endpoints.
#   BROKER_KEYS_DIR, BROKER_JWKS_DIR, USER_DIR
#                  written later by the broker and by user-login: only handed over here.
#
# It runs as root for one reason: a fresh named volume belongs to root, and the sigil image runs
# as uid 65532. Everything is handed to that uid at the end.
set -eu

SIGIL=${SIGIL:-node /app/dist/src/cli/main.js}
OWNER=${OWNER:-65532:65532}
CA_DIR=${CA_DIR:-/var/lib/sigil/ca}
IDP_DIR=${IDP_DIR:-/var/lib/sigil/dev-idp}
NATS_TLS_DIR=${NATS_TLS_DIR:-/var/lib/sigil/nats-tls}
ADMIN_DIR=${ADMIN_DIR:-/var/lib/sigil/admin}
BROKER_KEYS_DIR=${BROKER_KEYS_DIR:-/var/lib/sigil/broker-keys}
BROKER_JWKS_DIR=${BROKER_JWKS_DIR:-/var/lib/sigil/broker-jwks}
USER_DIR=${USER_DIR:-/var/lib/sigil/user}

$SIGIL ca init --trust-domain example.org --dir "$CA_DIR" --if-missing
$SIGIL dev-idp init --dir "$IDP_DIR"
node "$(dirname "$0")/nats-cert.mjs" "$CA_DIR" "$NATS_TLS_DIR" nats

mkdir -p "$ADMIN_DIR" "$BROKER_KEYS_DIR" "$BROKER_JWKS_DIR" "$USER_DIR"
if [ ! -s "$ADMIN_DIR/token" ]; then
  (umask 077 && node -e 'process.stdout.write(require("node:crypto").randomBytes(32).toString("hex") + "\n")' > "$ADMIN_DIR/token")
  echo "created the admin token in $ADMIN_DIR/token"
fi

chown -R "$OWNER" "$CA_DIR" "$IDP_DIR" "$NATS_TLS_DIR" "$ADMIN_DIR" "$BROKER_KEYS_DIR" "$BROKER_JWKS_DIR" "$USER_DIR"
echo "ca-init: done"
