#!/bin/sh
# DEV ONLY. The `user-login` service stands in for a person signed in to your identity provider:
# it mints alice's user access token with the dev IdP (`sigil dev-token`) and keeps a fresh one in
# TOKEN_FILE, which only the planner agent mounts. The planner sends it with its calls; the
# planner's sidecar exchanges it at the broker for a delegation token addressed to the
# researcher (docs/delegation.md). A real deployment gets user tokens from its login flow.
set -eu

SIGIL=${SIGIL:-node /app/dist/src/cli/main.js}
IDP_DIR=${IDP_DIR:-/var/lib/sigil/dev-idp}
TOKEN_FILE=${TOKEN_FILE:-/var/lib/sigil/user/token}

umask 022 # the planner agent runs as another user and must read it
while :; do
  $SIGIL dev-token --dir "$IDP_DIR" --sub alice@example.org --scope "research.read research.write" --aud sigil-broker --ttl 1h > "$TOKEN_FILE.tmp"
  mv "$TOKEN_FILE.tmp" "$TOKEN_FILE"
  echo "user-login: a fresh token for alice@example.org (valid 1h) in $TOKEN_FILE"
  sleep 1800
done
