#!/usr/bin/env bash
# Starts the whole stack on this machine: kube-sim (the simulated cluster),
# the control plane, a relay and an agent; creates a demo tenant and cluster,
# writes a kubeconfig for you, and prints what to type next.
# kubectl -> control plane (token, role, grant) -> relay -> QUIC -> agent -> kube-sim.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

# Ports and build profile can be overridden (the CI smoke test does).
SIM_PORT=${KUBECHAT_DEV_SIM_PORT:-6443}
CP_PORT=${KUBECHAT_DEV_CP_PORT:-8443}
CP_INTERNAL_PORT=${KUBECHAT_DEV_CP_INTERNAL_PORT:-8444}
CP_ADMIN_PORT=${KUBECHAT_DEV_CP_ADMIN_PORT:-9092}
QUIC_PORT=${KUBECHAT_DEV_QUIC_PORT:-7443}
WS_PORT=${KUBECHAT_DEV_WS_PORT:-7445}
INTERNAL_PORT=${KUBECHAT_DEV_INTERNAL_PORT:-7444}
RELAY_ADMIN_PORT=${KUBECHAT_DEV_RELAY_ADMIN_PORT:-9090}
AGENT_ADMIN_PORT=${KUBECHAT_DEV_AGENT_ADMIN_PORT:-9091}
PROFILE=${KUBECHAT_DEV_PROFILE:-release}
DEV=${KUBECHAT_DEV_DIR:-.dev}

KUBECTL=$(bash scripts/install-kubectl.sh)
if [ "$PROFILE" = release ]; then
  cargo build --release -p kubechat-relay -p kubechat-agent -p kube-sim -p kubechat-control-plane
  BIN=target/release
else
  cargo build -p kubechat-relay -p kubechat-agent -p kube-sim -p kubechat-control-plane
  BIN=target/debug
fi
mkdir -p "$DEV"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped"
}
trap cleanup INT TERM EXIT
wait_for() { # what, command...
  local what=$1; shift
  for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "error: $what did not come up; see the logs in $DEV" >&2; exit 1
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

rm -rf "$DEV/kube-sim" "$DEV/certs" "$DEV/cp.db"* "$DEV/cp-spool" "$DEV/relay-spool"
"$BIN/kube-sim" --listen "127.0.0.1:$SIM_PORT" --out-dir "$DEV/kube-sim" 2> "$DEV/kube-sim.log" > "$DEV/kube-sim.out" &
PIDS+=($!)
"$BIN/kubechat-relay" dev-certs --out "$DEV/certs" > /dev/null
C="$DEV/certs"

ADMIN_TOKEN=kc_$(python3 -c 'import secrets; print(secrets.token_hex(20))')
"$BIN/kubechat-control-plane" --listen "127.0.0.1:$CP_PORT" --database-url "sqlite://$DEV/cp.db?mode=rwc" \
  --platform-admin-token "$ADMIN_TOKEN" --self-service-signup --tls-cert "$C/relay.crt" --tls-key "$C/relay.key" --public-ca "$C/relay-ca.crt" \
  --internal-listen "127.0.0.1:$CP_INTERNAL_PORT" --admin-listen "127.0.0.1:$CP_ADMIN_PORT" --relay-ca "$C/relay-ca.crt" \
  --relay-client-cert "$C/internal-client.crt" --relay-client-key "$C/internal-client.key" \
  --agent-ca-cert "$C/agent-ca.crt" --agent-ca-key "$C/agent-ca.key" --enroll-relay "127.0.0.1:$QUIC_PORT#ws=$WS_PORT" \
  --agent-chart ./charts/kubechat-agent --spool-dir "$DEV/cp-spool" \
  2> "$DEV/control-plane.log" > "$DEV/control-plane.out" &
PIDS+=($!)
CP="https://127.0.0.1:$CP_PORT"
wait_for "the control plane" curl -fsS --cacert "$C/relay-ca.crt" "$CP/v1/grant-keys"
GRANT_KEY=$(curl -fsS --cacert "$C/relay-ca.crt" "$CP/v1/grant-keys" | json 'd["keys"][0]["flag"]')

kc() { "$BIN/kubechat" --server "$CP" --ca-file "$C/relay-ca.crt" "$@"; }
TENANT_JSON=$(kc --token "$ADMIN_TOKEN" -o json tenants create --name Demo --slug demo --admin-email admin@demo.example --plan team)
TENANT=$(json 'd["tenant"]["id"]' <<< "$TENANT_JSON")
TOKEN=$(json 'd["token"]' <<< "$TENANT_JSON")
CLUSTER_JSON=$(kc --token "$TOKEN" -o json clusters add --tenant "$TENANT" --name dev)
CLUSTER=$(json 'd["id"]' <<< "$CLUSTER_JSON")
BOOTSTRAP=$(json 'd["bootstrapToken"]' <<< "$CLUSTER_JSON")
rm -rf "$DEV/agent"

wait_for "kube-sim" test -f "$DEV/kube-sim/agent.kubeconfig"
# The relay reports its tunnels to the control plane (gRPC, mutual TLS with
# its own certificate) and learns revocations from the answers.
"$BIN/kubechat-relay" \
  --quic-listen "127.0.0.1:$QUIC_PORT" --ws-listen "127.0.0.1:$WS_PORT" --internal-listen "127.0.0.1:$INTERNAL_PORT" --admin-listen "127.0.0.1:$RELAY_ADMIN_PORT" \
  --tls-cert "$C/relay.crt" --tls-key "$C/relay.key" \
  --agent-ca "$C/agent-ca.crt" --internal-ca "$C/internal-ca.crt" --grant-key "$GRANT_KEY" \
  --control-plane-url "https://127.0.0.1:$CP_INTERNAL_PORT" --control-plane-ca "$C/relay-ca.crt" \
  --spool-dir "$DEV/relay-spool" \
  2> "$DEV/relay.log" &
PIDS+=($!)
# The agent enrolls through the real bootstrap-token path (its key never
# leaves it), keeps its credentials in $DEV/agent (a Kubernetes Secret with
# --state-secret in a cluster), takes relays, relay CA and grant keys from the
# answer, and renews at 2/3 of the certificate's life.
KUBECHAT_BOOTSTRAP_TOKEN="$BOOTSTRAP" "$BIN/kubechat-agent" \
  --control-plane "$CP" --control-plane-ca "$C/relay-ca.crt" --state-dir "$DEV/agent" \
  --admin-listen "127.0.0.1:$AGENT_ADMIN_PORT" --kubeconfig "$DEV/kube-sim/agent.kubeconfig" \
  2> "$DEV/agent.log" &
PIDS+=($!)

# One user per role, each with a token and a kubeconfig that points at the
# control plane (downloaded from the API, as a user would).
kubeconfig_for() { # token, file
  kc --token "$1" clusters kubeconfig --tenant "$TENANT" "$CLUSTER" > "$2"
  chmod 600 "$2"
}
kubeconfig_for "$TOKEN" "$DEV/kubeconfig"
for role in viewer user; do
  USER_ID=$(kc --token "$TOKEN" -o json users add --tenant "$TENANT" --email "$role@demo.example" --role "tenant_$role" | json 'd["id"]')
  ROLE_TOKEN=$(kc --token "$TOKEN" -o json tokens create --tenant "$TENANT" --name kubectl --user "$USER_ID" | json 'd["token"]')
  kubeconfig_for "$ROLE_TOKEN" "$DEV/kubeconfig-$role"
done
printf 'TENANT=%s\nCLUSTER=%s\n' "$TENANT" "$CLUSTER" > "$DEV/ids.env"
echo "$ADMIN_TOKEN" > "$DEV/admin-token"; chmod 600 "$DEV/admin-token"
wait_for "the agent's tunnel" curl -fsS "http://127.0.0.1:$AGENT_ADMIN_PORT/readyz"
cat <<MSG

KubeChat dev stack is up:
  control plane  $CP   (log $DEV/control-plane.log; platform admin token in $DEV/admin-token)
  kube-sim       https://127.0.0.1:$SIM_PORT   (admin kubeconfig $DEV/kube-sim/admin.kubeconfig)
  relay          quic 127.0.0.1:$QUIC_PORT, internal 127.0.0.1:$INTERNAL_PORT, admin http://127.0.0.1:$RELAY_ADMIN_PORT
  agent          admin http://127.0.0.1:$AGENT_ADMIN_PORT
  tenant id      $TENANT (demo), cluster id $CLUSTER (dev)

Your kubeconfig goes kubectl -> control plane -> relay -> QUIC tunnel -> agent -> kube-sim,
as admin@demo.example (tenant_admin). Try:

  export KUBECONFIG=$(realpath "$DEV")/kubeconfig
  $KUBECTL get pods -A
  $KUBECTL logs -f -n web deploy/frontend
  $KUBECTL exec -it -n web deploy/api -- sh
  $BIN/kubechat --server $CP --ca-file $C/relay-ca.crt --token \$(cat $DEV/admin-token) tenants list
  curl http://127.0.0.1:$RELAY_ADMIN_PORT/v1/tunnels

Ctrl-C stops everything.
MSG
wait
