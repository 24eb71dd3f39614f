#!/usr/bin/env bash
# Soak test (issue 9, point 3): a real tower_context::serve server on 127.0.0.1 under
# 200 concurrent clients for 60 s, in release mode. 10% of the clients disconnect
# mid-response, 5% send malformed requests. Prints the report and exits non-zero when
# an invariant breaks (see examples/soak.rs).
#
#   scripts/soak.sh            # 60 s, 200 clients
#   scripts/soak.sh 300 400    # 300 s, 400 clients
#
# The short version runs in `cargo test` (tests/soak.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-${SOAK_SECS:-60}}"
clients="${2:-${SOAK_CLIENTS:-200}}"

# One file descriptor per client socket, plus sockets waiting to close.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --all-features --example soak
exec target/release/examples/soak "$secs" "$clients"
