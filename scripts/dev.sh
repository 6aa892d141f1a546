#!/usr/bin/env bash
# Starts the whole stack on this machine: kube-sim (the simulated cluster),
# a relay and an agent that enrolls with development certificates, writes a
# kubeconfig for you, and prints what to type next. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

# Ports and build profile can be overridden (the CI smoke test does).
SIM_PORT=${KUBECHAT_DEV_SIM_PORT:-6443}
QUIC_PORT=${KUBECHAT_DEV_QUIC_PORT:-7443}
INTERNAL_PORT=${KUBECHAT_DEV_INTERNAL_PORT:-7444}
RELAY_ADMIN_PORT=${KUBECHAT_DEV_RELAY_ADMIN_PORT:-9090}
AGENT_ADMIN_PORT=${KUBECHAT_DEV_AGENT_ADMIN_PORT:-9091}
PROFILE=${KUBECHAT_DEV_PROFILE:-release}
DEV=${KUBECHAT_DEV_DIR:-.dev}

KUBECTL=$(bash scripts/install-kubectl.sh)
if [ "$PROFILE" = release ]; then
  cargo build --release -p kubechat-relay -p kubechat-agent -p kube-sim
  BIN=target/release
else
  cargo build -p kubechat-relay -p kubechat-agent -p kube-sim
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

rm -rf "$DEV/kube-sim"
"$BIN/kube-sim" --listen 127.0.0.1:$SIM_PORT --out-dir "$DEV/kube-sim" 2> "$DEV/kube-sim.log" > "$DEV/kube-sim.out" &
PIDS+=($!)
"$BIN/kubechat-relay" dev-certs --out "$DEV/certs" --tenant demo --cluster dev > /dev/null
for _ in $(seq 1 100); do [ -f "$DEV/kube-sim/agent.kubeconfig" ] && break; sleep 0.1; done

"$BIN/kubechat-relay" \
  --quic-listen 127.0.0.1:$QUIC_PORT --internal-listen 127.0.0.1:$INTERNAL_PORT --admin-listen 127.0.0.1:$RELAY_ADMIN_PORT \
  --tls-cert "$DEV/certs/relay.crt" --tls-key "$DEV/certs/relay.key" \
  --agent-ca "$DEV/certs/agent-ca.crt" --internal-ca "$DEV/certs/internal-ca.crt" \
  --dev-identity-from-impersonation true \
  2> "$DEV/relay.log" &
PIDS+=($!)
"$BIN/kubechat-agent" \
  --relay 127.0.0.1:$QUIC_PORT --admin-listen 127.0.0.1:$AGENT_ADMIN_PORT \
  --tls-cert "$DEV/certs/agent.crt" --tls-key "$DEV/certs/agent.key" --relay-ca "$DEV/certs/relay-ca.crt" \
  --kubeconfig "$DEV/kube-sim/agent.kubeconfig" \
  2> "$DEV/agent.log" &
PIDS+=($!)

b64() { base64 -w0 < "$1"; }
cat > "$DEV/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: kubechat-dev
  cluster:
    server: https://127.0.0.1:$INTERNAL_PORT/v1/clusters/dev/k8s
    certificate-authority-data: $(b64 "$DEV/certs/relay-ca.crt")
users:
- name: dev
  user:
    client-certificate-data: $(b64 "$DEV/certs/internal-client.crt")
    client-key-data: $(b64 "$DEV/certs/internal-client.key")
    as: kubechat:user:dev@example.com
    as-groups:
    - kubechat:tenant:demo
    - kubechat:role:tenant_admin
contexts:
- name: kubechat-dev
  context:
    cluster: kubechat-dev
    user: dev
current-context: kubechat-dev
KC

for _ in $(seq 1 200); do
  curl -fsS http://127.0.0.1:$AGENT_ADMIN_PORT/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
cat <<MSG

KubeChat dev stack is up:
  kube-sim  https://127.0.0.1:$SIM_PORT        (log $DEV/kube-sim.log; admin kubeconfig $DEV/kube-sim/admin.kubeconfig)
  relay     quic 127.0.0.1:$QUIC_PORT, internal https://127.0.0.1:$INTERNAL_PORT, admin http://127.0.0.1:$RELAY_ADMIN_PORT  (log $DEV/relay.log)
  agent     admin http://127.0.0.1:$AGENT_ADMIN_PORT   (log $DEV/agent.log)

Your kubeconfig goes kubectl -> relay -> QUIC tunnel -> agent -> kube-sim, as
kubechat:user:dev@example.com (group kubechat:role:tenant_admin). Try:

  export KUBECONFIG=$(realpath "$DEV")/kubeconfig
  $KUBECTL get pods -A
  $KUBECTL logs -f -n web deploy/frontend
  $KUBECTL exec -it -n web deploy/api -- sh
  curl http://127.0.0.1:$RELAY_ADMIN_PORT/v1/tunnels

Ctrl-C stops everything.
MSG
wait
