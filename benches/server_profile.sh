#!/usr/bin/env bash
# Where the loopback server spends its CPU, app against app: samples the load server
# (examples/load_server.rs) with perf while wrk drives it on 127.0.0.1, and prints,
# for each app, the share of the server's CPU that goes to the layer's own functions,
# to `memmove`, to the allocator, and to hyper and tokio (the same work in every app,
# so a yardstick between runs whose speed differs). Apps run in turn, round after
# round, so each pair sees the same machine.
#
#   bash benches/server_profile.sh                      # ours against the lifecycle floor, 4 rounds
#   APPS="context floor" ROUNDS=2 bash benches/server_profile.sh
#   BIN=/tmp/load_server_other APPS=context ROUNDS=1 bash benches/server_profile.sh
#
# Shares, not times: on this VM a run's speed drifts too much for samples per
# request to compare between runs, but within one run the shares hold. perf samples
# the CPU clock (`-e cpu-clock`), which works where hardware counters are not offered.
# The layer's functions are those whose names hold `tower_context` or the floors'
# module, plus `IntoFuture::poll`, into which axum's `Router::layer` inlines our
# response future. Inlining blurs this column both ways: the floors' futures are
# inlined into axum's, so their share is a little low, and part of axum's wrapper
# futures is inlined into ours, so ours is about 0.25 high (BENCHMARKS.md, "The
# loopback distance seen from the server"). Needs perf and wrk; run as a user allowed
# to attach perf to its own processes.
set -euo pipefail
cd "$(dirname "$0")/.."

APPS="${APPS:-lifecycle context}"
ROUNDS="${ROUNDS:-4}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-6}"
PORT="${PORT:-4600}"

command -v perf >/dev/null || { echo "perf is needed (Debian: linux-perf)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed (Debian: wrk)" >&2; exit 1; }
# BIN: another build of the load server (a copy kept aside), to set two builds of
# the layer side by side; by default the current one is built and run.
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release --example load_server >&2
  bin=target/release/examples/load_server
fi
if (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "something already answers on 127.0.0.1:$PORT; set PORT to a free one" >&2
  exit 1
fi
work=$(mktemp -d)
server=""
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

# As in load.sh: the server on core 0, wrk on core 1, where there are two cores.
server_cpu=(); client_cpu=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0); client_cpu=(taskset -c 1)
fi

# One app, one round: start it, warm it up, sample it under load, and print its
# shares from perf's report (symbol by symbol, without children).
sample() {
  local app=$1 data="$work/$1.data" rps
  "${server_cpu[@]}" "$bin" "$app" "127.0.0.1:$PORT" >/dev/null &
  server=$!
  for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  "${client_cpu[@]}" wrk -t1 -c32 -d1s "http://127.0.0.1:$PORT/" >/dev/null
  perf record -q -e cpu-clock -F 20000 -p "$server" -o "$data" -- sleep "$SECONDS_PER_RUN" >/dev/null 2>"$work/perf.err" &
  local perf_pid=$!
  rps=$("${client_cpu[@]}" wrk -t1 -c32 -d"${SECONDS_PER_RUN}s" "http://127.0.0.1:$PORT/" | awk '/Requests\/sec/ {print int($2)}')
  # perf's own complaint (no permission to attach, say) is shown rather than a row
  # of zeros.
  if ! wait "$perf_pid"; then
    echo "perf record failed for $app:" >&2
    cat "$work/perf.err" >&2
    exit 1
  fi
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
  perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null | awk -v app="$app" -v rps="$rps" '
    /^ +[0-9.]+%/ {
      share = $1 + 0
      # The symbol: what follows "[.] " up to the report'"'"'s next column.
      sym = $0; sub(/^ +[0-9.]+% +\[.\] +/, "", sym); sub(/  +.*$/, "", sym)
      if ($2 == "[k]") next
      user += share
      if (sym ~ /tower_context|load_server::floor/ || sym ~ /IntoFuture<Fut> as core::future::future::Future>::poll/) layer += share
      else if (sym ~ /memmove|memcpy/) copies += share
      else if (sym ~ /malloc|free|__rdl_|__rust_alloc|__rust_dealloc|unlink_chunk/) alloc += share
      else if (sym ~ /^<?(hyper|httparse|tokio|mio)::/) base += share
    }
    END {
      printf "| %s | %d | %.1f | %.2f | %.2f | %.2f | %.1f |\n", app, rps, user, layer, copies, alloc, base
    }'
}

echo
echo "$ROUNDS rounds of ${SECONDS_PER_RUN} s per app; shares of the server's CPU samples, in %"
echo
echo "| app | requests/s | user space | the layer's functions | memmove | allocator | hyper and tokio |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for _ in $(seq "$ROUNDS"); do
  for app in $APPS; do sample "$app"; done
done
