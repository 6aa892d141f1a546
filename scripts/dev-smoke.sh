#!/usr/bin/env bash
# CI smoke test of the README's first command: starts scripts/dev.sh (debug
# build, free ports, its own directory), runs kubectl through the stack it
# printed, and stops it with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build (and fetch kubectl) first, untimed: on a fresh machine a cold build
# takes longer than any wait below should, and the wait times the start only.
cargo build --locked -p kubechat-relay -p kubechat-agent -p kube-sim -p kubechat-control-plane
bash scripts/install-kubectl.sh > /dev/null
# The browser tests' chromium and playwright-core (also untimed).
UI_NODE=$(bash scripts/install-browser.sh)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export KUBECHAT_DEV_SIM_PORT=$(free_port) KUBECHAT_DEV_QUIC_PORT=$(free_port) KUBECHAT_DEV_INTERNAL_PORT=$(free_port) KUBECHAT_DEV_CP_PORT=$(free_port)
export KUBECHAT_DEV_CP_INTERNAL_PORT=$(free_port) KUBECHAT_DEV_CP_ADMIN_PORT=$(free_port) KUBECHAT_DEV_WS_PORT=$(free_port)
export KUBECHAT_DEV_RELAY_ADMIN_PORT=$(free_port) KUBECHAT_DEV_AGENT_ADMIN_PORT=$(free_port)
export KUBECHAT_DEV_PROFILE=debug
export KUBECHAT_DEV_DIR=$(mktemp -d)
OUT="$KUBECHAT_DEV_DIR/dev.out"

bash scripts/dev.sh > "$OUT" 2>&1 &
DEV_PID=$!
stop() { kill -TERM "$DEV_PID" 2>/dev/null || true; wait "$DEV_PID" 2>/dev/null || true; }
trap stop EXIT

# dev.sh's own cargo build is a no-op now; 120 s is for starting four
# processes and enrolling the agent.
for _ in $(seq 1 240); do
  grep -q "dev stack is up" "$OUT" && break
  kill -0 "$DEV_PID" 2>/dev/null || { cat "$OUT"; echo "dev.sh exited early"; exit 1; }
  sleep 0.5
done
grep -q "dev stack is up" "$OUT" || { cat "$OUT"; echo "dev stack did not come up"; exit 1; }

KUBECTL=$(bash scripts/install-kubectl.sh)
export KUBECONFIG="$KUBECHAT_DEV_DIR/kubeconfig"
CACHE=$(mktemp -d)
k() { "$KUBECTL" --cache-dir "$CACHE" "$@"; }
fail=0
check() { # name, expected substring, command...
  local name=$1 want=$2; shift 2
  local got
  got=$("$@" 2>&1) || true
  if grep -qF -- "$want" <<< "$got"; then echo "ok: $name"; else echo "FAILED: $name: want '$want', got: $got"; fail=1; fi
}
check "get pods through the tunnel" "Running" k get pods -A
check "exec through the tunnel" "api-" k exec -n web deploy/api -- hostname
check "tunnel listed by the relay" '"tenant":"t' curl -fsS "http://127.0.0.1:$KUBECHAT_DEV_RELAY_ADMIN_PORT/v1/tunnels"
check "viewer refused a delete" "tenant_viewer can only read" k --kubeconfig "$KUBECHAT_DEV_DIR/kubeconfig-viewer" delete pod -n web --all
check "user lists pods" "Running" k --kubeconfig "$KUBECHAT_DEV_DIR/kubeconfig-user" get pods -n web
. "$KUBECHAT_DEV_DIR/ids.env"
TENANT_TOKEN=$(grep -o 'kc_[A-Za-z0-9_-]*' "$KUBECHAT_DEV_DIR/kubeconfig" | head -1)
check "control plane shows the tunnel" '"connected":true' curl -fsS --cacert "$KUBECHAT_DEV_DIR/certs/relay-ca.crt" -H "Authorization: Bearer $TENANT_TOKEN" "https://127.0.0.1:$KUBECHAT_DEV_CP_PORT/v1/tenants/$TENANT/clusters/$CLUSTER"
check "audit trail verifies" '"intact":true' curl -fsS --cacert "$KUBECHAT_DEV_DIR/certs/relay-ca.crt" -H "Authorization: Bearer $TENANT_TOKEN" "https://127.0.0.1:$KUBECHAT_DEV_CP_PORT/v1/tenants/$TENANT/audit/verify"
check "kubectl requests audited" '"verb":"list"' curl -fsS --cacert "$KUBECHAT_DEV_DIR/certs/relay-ca.crt" -H "Authorization: Bearer $TENANT_TOKEN" "https://127.0.0.1:$KUBECHAT_DEV_CP_PORT/v1/tenants/$TENANT/audit?verb=list"
check "control plane metrics" "kubechat_cp_kube_requests_total" curl -fsS "http://127.0.0.1:$KUBECHAT_DEV_CP_ADMIN_PORT/metrics"
check "agent ready" "ready" curl -fsS "http://127.0.0.1:$KUBECHAT_DEV_AGENT_ADMIN_PORT/readyz"
check "control plane lists the tenant" "demo" "$PWD/target/debug/kubechat" --server "https://127.0.0.1:$KUBECHAT_DEV_CP_PORT" --ca-file "$KUBECHAT_DEV_DIR/certs/relay-ca.crt" --token "$(cat "$KUBECHAT_DEV_DIR/admin-token")" tenants list
# The web app in a real browser (chromium via playwright-core) against this
# stack; screenshots of each page in target/ui-screenshots.
UI_OUT="$PWD/target/ui-screenshots"
rm -rf "$UI_OUT"; mkdir -p "$UI_OUT"
VIEWER_TOKEN=$(grep -o 'kc_[A-Za-z0-9_-]*' "$KUBECHAT_DEV_DIR/kubeconfig-viewer" | head -1)
if KUBECHAT_UI_NODE="$UI_NODE" KUBECHAT_CHROMIUM="$(command -v chromium)" KUBECHAT_UI_URL="https://127.0.0.1:$KUBECHAT_DEV_CP_PORT" \
  KUBECHAT_UI_ADMIN_TOKEN="$TENANT_TOKEN" KUBECHAT_UI_VIEWER_TOKEN="$VIEWER_TOKEN" KUBECHAT_UI_PLATFORM_TOKEN="$(cat "$KUBECHAT_DEV_DIR/admin-token")" KUBECHAT_UI_CLUSTER="$CLUSTER" KUBECHAT_UI_OUT="$UI_OUT" \
  KUBECHAT_UI_AGENT_BIN="$PWD/target/debug/kubechat-agent" KUBECHAT_UI_CA="$KUBECHAT_DEV_DIR/certs/relay-ca.crt" \
  KUBECHAT_UI_KUBECONFIG="$KUBECHAT_DEV_DIR/kube-sim/agent.kubeconfig" \
  node ui-tests/web-app.cjs; then echo "ok: the web app in a real browser"; else echo "FAILED: the web app in a real browser"; fail=1; fi
# No log of any component may contain a token or a private key.
leaks=0
for secret in "$(cat "$KUBECHAT_DEV_DIR/admin-token")" "$TENANT_TOKEN" "$VIEWER_TOKEN" "PRIVATE KEY" "$(sed -n 2p "$KUBECHAT_DEV_DIR/agent/agent.key")" "kcb_"; do
  if [ -n "$secret" ] && grep -rqF -- "$secret" "$KUBECHAT_DEV_DIR"/*.log "$OUT"; then
    echo "FAILED: a secret appears in the logs: ${secret:0:12}…"; leaks=1
  fi
done
if [ $leaks -eq 0 ]; then echo "ok: no token or private key in any log"; else fail=1; fi
if [ $fail -ne 0 ]; then echo "--- dev.sh output"; cat "$OUT"; exit 1; fi
echo "smoke: 13 passed, 0 failed"
