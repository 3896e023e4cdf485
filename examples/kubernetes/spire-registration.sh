#!/bin/sh
# Registration entries for the planner's Sigil sidecar (docs/spire.md). Run once against the
# SPIRE server; `entry create` refuses an entry that already exists, so re-running reports that
# for each entry instead of duplicating it.
#
# With the SPIRE Controller Manager (the SPIRE Helm charts), write a ClusterSPIFFEID instead
# (docs/spire.md); do not mix both ways for the same workload.
set -eu

# How to reach spire-server; adjust to your installation.
spire_server() {
  kubectl exec -n "${SPIRE_NAMESPACE:-spire}" "${SPIRE_SERVER_POD:-spire-server-0}" -c spire-server -- \
    /opt/spire/bin/spire-server "$@"
}

# 1. The SPIRE agents: one node alias for every agent of the cluster attested by k8s_psat, used
#    as the parent of the workload entries below. Skip it if your installation has one already
#    (then use its SPIFFE ID as -parentID).
spire_server entry create \
  -node \
  -spiffeID spiffe://example.org/ns/spire/sa/spire-agent \
  -selector k8s_psat:cluster:demo-cluster \
  -selector k8s_psat:agent_ns:spire \
  -selector k8s_psat:agent_sa:spire-agent

# 2. The planner pod's sidecar. The selectors match the sigil container of pods in namespace
#    agents running as service account planner: the sidecar fetches the SVID, so the entry names
#    the *sigil* container. The agent container matches no entry and gets PermissionDenied.
#    Add `-hint internal` (SPIRE 1.6.3+) when a workload has several entries and sigil.yaml selects
#    one with identity.workloadApi.hint.
spire_server entry create \
  -parentID spiffe://example.org/ns/spire/sa/spire-agent \
  -spiffeID spiffe://example.org/ns/agents/sa/planner \
  -selector k8s:ns:agents \
  -selector k8s:sa:planner \
  -selector k8s:container-name:sigil

# Check what was registered:
#   spire_server entry show -spiffeID spiffe://example.org/ns/agents/sa/planner
