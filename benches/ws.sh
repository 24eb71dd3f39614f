#!/usr/bin/env bash
# WebSocket load run on loopback: starts examples/chat_server in its own process (one
# worker thread), then benches/ws_load.rs: the server's memory per idle WebSocket
# connection (its RSS over IDLE connections), and room frames delivered per second to
# MEMBERS connections, with every dropped frame reported by an alert.
#
#   bash benches/ws.sh
#   IDLE=2000 MEMBERS=500 MESSAGES=100 bash benches/ws.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# One file descriptor per socket, on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --example chat_server >&2
cargo bench --bench ws_load --no-run >&2 2>&1
client=$(ls -t target/release/deps/ws_load-* | grep -v '\.d$' | head -n 1)

port=$((4100 + RANDOM % 500))
target/release/examples/chat_server "127.0.0.1:$port" > /dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.05
done

SERVER="127.0.0.1:$port" SERVER_PID="$server" "$client"
