# Sigil sidecar image. docs/deploy.md explains every choice here; test/deploy/dockerfile.test.ts
# replays this file's build steps (the COPYs and RUNs of the build stage, the COPYs of the
# runtime stage) in a temporary folder and starts the result, so what is written here is what CI
# exercises. Keep to instructions that test understands: FROM, ARG, ENV, WORKDIR, COPY, RUN
# (build stage only), USER, EXPOSE, STOPSIGNAL, HEALTHCHECK, ENTRYPOINT, CMD, LABEL.
#
#   docker build -t sigil:dev .
#   docker run --rm -v "$PWD/sigil.yaml:/etc/sigil/sigil.yaml:ro" sigil:dev

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: dev dependencies, TypeScript compile, then drop the dev dependencies -------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would compile before the sources are copied; no dependency needs
# an install script.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build
RUN npm prune --omit=dev --ignore-scripts --no-audit --no-fund
# Read at run time: the Workload API protobuf, the Cedar schema, the demo's agents (`sigil demo`).
COPY proto ./proto
COPY schema ./schema
COPY examples/demo ./examples/demo
# Files keep the modes they had in the build context; a checkout made under umask 077 would
# leave them unreadable to the runtime user. Everything the runtime stage takes is made
# world-readable here (the runtime stage has no RUN, and COPY --chmod needs BuildKit).
RUN chmod -R a+rX package.json dist node_modules proto schema examples

# ---- runtime: Node, the compiled sidecar, production dependencies; nothing else -------------
# No RUN here: the runtime stage adds files only, so it has no package manager step and no
# shell step to audit, and the files stay root-owned (the sidecar cannot rewrite its own code).
FROM ${NODE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sigil" \
      org.opencontainers.image.description="Identity-enforcing sidecar for AI agents: SPIFFE mTLS, per-call Cedar authorization, signed bus messages" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production \
    SIGIL_CONFIG=/etc/sigil/sigil.yaml
WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/proto ./proto
COPY --from=build /src/schema ./schema
COPY --from=build /src/examples ./examples
# A numeric user: Kubernetes' runAsNonRoot can only verify a numeric UID. 65532 is the
# conventional "nonroot" ID (distroless, the examples/kubernetes manifests).
USER 65532:65532
# inbound mTLS, and admin (loopback by default: for probes and scraping from outside the
# container set SIGIL_ADMIN_LISTEN=0.0.0.0:15000 together with admin.tokenFile, which is then
# required). The outbound listener and the local bus API are loopback-only: not exposed.
EXPOSE 8443 15000
# `sigil run` drains on SIGTERM (shutdown.delay, then shutdown.drainTimeout) and handles it as
# PID 1 itself: no init process is needed.
STOPSIGNAL SIGTERM
# For a broker container, override it: `health --broker --config /etc/sigil/broker.yaml`.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "/app/dist/src/cli/main.js", "health"]
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
CMD ["run"]
