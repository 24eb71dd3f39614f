#!/usr/bin/env bash
# Loopback load run: the same axum app bare and with ContextLayer::new(), driven by
# wrk on 127.0.0.1, interleaved (bare, context, bare, context, ...) so both see the same
# machine conditions. Prints requests per second and p99 latency for each, and ratios.
#
#   bash benches/load.sh            # 5 rounds of 5 s per app
#   ROUNDS=3 SECONDS_PER_RUN=3 bash benches/load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
CONNECTIONS="${CONNECTIONS:-32}"

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk from Debian's packages" >&2
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi

cargo build --release --example load_server >&2
bin=target/release/examples/load_server

# On a machine with two or more cores, the servers share core 0 (only one is driven
# at a time) and wrk gets core 1, so the two do not fight for a core and the
# scheduler does not move them around: the rounds scatter much less.
server_cpu=(); client_cpu=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  server_cpu=(taskset -c 0); client_cpu=(taskset -c 1)
fi

"${server_cpu[@]}" "$bin" bare 127.0.0.1:4101 >/dev/null & bare_pid=$!
"${server_cpu[@]}" "$bin" context 127.0.0.1:4102 >/dev/null & ctx_pid=$!
trap 'kill $bare_pid $ctx_pid 2>/dev/null || true' EXIT
for port in 4101 4102; do
  for _ in $(seq 50); do
    (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.1
  done
done

# wrk's summary: "Requests/sec: 12345.67" and the latency distribution's "99%" line.
run() {
  local out rps p99
  out=$("${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" --latency "http://127.0.0.1:$1/")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  # Latency in microseconds, whatever unit wrk chose.
  p99=$(awk -v v="$p99" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000; else f = 1;
    printf "%.1f", n * f }')
  echo "$rps $p99"
}

# Warm both up.
"${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d1s "http://127.0.0.1:4101/" >/dev/null
"${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d1s "http://127.0.0.1:4102/" >/dev/null

bare_rps=(); ctx_rps=(); bare_p99=(); ctx_p99=()
for round in $(seq "$ROUNDS"); do
  # Alternate which app goes first, so neither always follows the other.
  if (( round % 2 )); then
    read -r r p < <(run 4101); bare_rps+=("$r"); bare_p99+=("$p")
    read -r r p < <(run 4102); ctx_rps+=("$r"); ctx_p99+=("$p")
  else
    read -r r p < <(run 4102); ctx_rps+=("$r"); ctx_p99+=("$p")
    read -r r p < <(run 4101); bare_rps+=("$r"); bare_p99+=("$p")
  fi
  echo "round $round: bare ${bare_rps[-1]} req/s p99 ${bare_p99[-1]}us | context ${ctx_rps[-1]} req/s p99 ${ctx_p99[-1]}us" >&2
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
br=$(median "${bare_rps[@]}"); cr=$(median "${ctx_rps[@]}")
bp=$(median "${bare_p99[@]}"); cp=$(median "${ctx_p99[@]}")
echo
echo "| app | requests/s (median of $ROUNDS) | p99 latency us (median) |"
echo "|---|---|---|"
echo "| bare axum | $br | $bp |"
echo "| with ContextLayer::new() | $cr | $cp |"
# Ratios within each round (the two runs of a round saw the same machine), then
# their median; and the ratio of the medians.
rps_ratios=(); p99_ratios=()
for i in "${!bare_rps[@]}"; do
  rps_ratios+=("$(awk -v c="${ctx_rps[$i]}" -v b="${bare_rps[$i]}" 'BEGIN {printf "%.4f", c/b}')")
  p99_ratios+=("$(awk -v c="${ctx_p99[$i]}" -v b="${bare_p99[$i]}" 'BEGIN {printf "%.4f", c/b}')")
done
rr=$(median "${rps_ratios[@]}"); pr=$(median "${p99_ratios[@]}")
awk -v br="$br" -v cr="$cr" -v bp="$bp" -v cp="$cp" -v rr="$rr" -v pr="$pr" 'BEGIN {
  printf "| ratio of the medians, context/bare | %.3f | %.3f |\n", cr/br, cp/bp
  printf "| median of the per-round ratios | %.3f (target >= 0.97) | %.3f (target <= 1.05) |\n", rr, pr }'
