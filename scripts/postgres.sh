#!/usr/bin/env bash
# Starts a throw-away PostgreSQL (Debian's package, installed if missing) on
# a free port of 127.0.0.1 and prints a URL for a non-superuser role that may
# create databases (so row-level security applies to it). Stop it with
#   pg_ctl -D <dir>/data stop   (the directory is printed on stderr)
set -euo pipefail

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$PGBIN" ]; then
  echo "installing PostgreSQL from Debian's packages" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DIR=$(mktemp -d /tmp/kubechat-pg.XXXXXX)
chown postgres: "$DIR"
run_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
run_pg "$PGBIN/initdb -D $DIR/data -A trust -U postgres" > "$DIR/initdb.log" 2>&1
run_pg "$PGBIN/pg_ctl -D $DIR/data -l $DIR/server.log -w -o \"-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=300\" start" > /dev/null
"$PGBIN/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
  -c "CREATE ROLE kubechat LOGIN PASSWORD 'kubechat' CREATEDB NOSUPERUSER NOBYPASSRLS" > /dev/null
echo "PostgreSQL running in $DIR on port $PORT" >&2
echo "postgres://kubechat:kubechat@127.0.0.1:$PORT/postgres"
