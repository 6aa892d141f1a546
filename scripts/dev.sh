#!/usr/bin/env bash
# Starts a relay and an agent on this machine with fresh development
# certificates. The agent forwards to the API server of the kubeconfig in
# $KUBECONFIG (default ~/.kube/config). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECONFIG_PATH="${KUBECONFIG:-$HOME/.kube/config}"
if [ ! -f "$KUBECONFIG_PATH" ]; then
  echo "error: no kubeconfig at $KUBECONFIG_PATH; set KUBECONFIG to one whose API server the agent should reach" >&2
  exit 64
fi

cargo build --release -p kubechat-relay -p kubechat-agent
BIN=target/release
DEV=.dev
mkdir -p "$DEV"
"$BIN/kubechat-relay" dev-certs --out "$DEV/certs" --tenant demo --cluster dev

"$BIN/kubechat-relay" \
  --quic-listen 127.0.0.1:7443 --internal-listen 127.0.0.1:7444 --admin-listen 127.0.0.1:9090 \
  --tls-cert "$DEV/certs/relay.crt" --tls-key "$DEV/certs/relay.key" \
  --agent-ca "$DEV/certs/agent-ca.crt" --internal-ca "$DEV/certs/internal-ca.crt" \
  2> "$DEV/relay.log" &
RELAY=$!
"$BIN/kubechat-agent" \
  --relay 127.0.0.1:7443 --admin-listen 127.0.0.1:9091 \
  --tls-cert "$DEV/certs/agent.crt" --tls-key "$DEV/certs/agent.key" --relay-ca "$DEV/certs/relay-ca.crt" \
  --kubeconfig "$KUBECONFIG_PATH" \
  2> "$DEV/agent.log" &
AGENT=$!
trap 'kill -TERM $AGENT $RELAY 2>/dev/null; wait $AGENT $RELAY 2>/dev/null; echo stopped' INT TERM EXIT

for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:9091/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
cat <<MSG
relay  : quic 127.0.0.1:7443, internal https://127.0.0.1:7444, admin http://127.0.0.1:9090 (log $DEV/relay.log)
agent  : admin http://127.0.0.1:9091 (log $DEV/agent.log), API server from $KUBECONFIG_PATH

Try a request through the tunnel, as the control plane would send it:

  curl --cacert $DEV/certs/relay-ca.crt --cert $DEV/certs/internal-client.crt --key $DEV/certs/internal-client.key \\
       -H 'kubechat-user: kubechat:user:you@example.com' \\
       https://127.0.0.1:7444/v1/clusters/dev/k8s/version

  curl http://127.0.0.1:9090/v1/tunnels     # tunnels the relay holds
  curl http://127.0.0.1:9091/readyz         # agent readiness

Ctrl-C stops both.
MSG
wait
