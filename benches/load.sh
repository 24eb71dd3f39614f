#!/usr/bin/env bash
# Loopback load run: the same axum app bare, with ContextLayer::new() added by
# Router::layer (as the README shows), with the layer around the whole router, and,
# for reference, with the least layer that captures the request head (the floor),
# with that plus the least a layer must do to tell each request's end (the lifecycle
# floor) and with tower-cookies' layer, all by Router::layer; driven by wrk on
# 127.0.0.1. Interleaved: every round runs each app once, in a
# rotating order, so all see the same machine conditions. Prints requests per second
# and p99 latency for each, and the ratios to bare taken within each round.
#
#   bash benches/load.sh            # 20 rounds of 2 s per app (about 7 minutes)
#   ROUNDS=60 bash benches/load.sh  # a tighter median (about 20 minutes)
#
# Short runs, many rounds: on a shared VM the speed drifts by tens of percent over
# seconds, so ratios are taken between runs that are close in time, and the median
# of many such ratios is reported with its quartiles. The servers are started anew
# every round: a process keeps one address-space layout for its life, and that alone
# can make it a few percent faster or slower, so one start per run would be one draw.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-20}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-2}"
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

apps=(bare context wrapped floor cookies lifecycle)
ports=()
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

# Starts the servers on ports of their own for this round, waits until they
# listen, and warms each up.
# A port is skipped while anything answers on it: the machine's own services (NATS
# on 4222, say) would otherwise take a round's server's place.
next_port=4100
start() {
  local i port
  pids=(); ports=()
  for i in "${!apps[@]}"; do
    while (echo > /dev/tcp/127.0.0.1/$next_port) 2>/dev/null; do next_port=$((next_port + 1)); done
    port=$next_port
    next_port=$((next_port >= 4999 ? 4100 : next_port + 1))
    ports+=("$port")
    "${server_cpu[@]}" "$bin" "${apps[$i]}" "127.0.0.1:$port" >/dev/null & pids+=($!)
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 50); do
      (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break
      sleep 0.1
    done
    "${client_cpu[@]}" wrk -t1 -c"$CONNECTIONS" -d1s "http://127.0.0.1:$port/" >/dev/null
  done
}

stop() {
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}

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

# rps[app,round] and p99[app,round]
declare -A rps p99
n=${#apps[@]}
for round in $(seq "$ROUNDS"); do
  line="round $round:"
  start "$round"
  for k in $(seq 0 $((n - 1))); do
    i=$(( (k + round) % n ))
    read -r r p < <(run "${ports[$i]}")
    rps[$i,$round]=$r; p99[$i,$round]=$p
  done
  stop
  for i in "${!apps[@]}"; do line+=" ${apps[$i]} ${rps[$i,$round]} req/s p99 ${p99[$i,$round]}us |"; done
  echo "$line" >&2
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# "q1–q3" of the values: the middle half of the rounds.
quartiles() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {q1 = int((NR + 3) / 4); q3 = int((3 * NR + 3) / 4); printf "%.3f–%.3f", a[q1], a[q3]}'; }
column() { local i=$1 what=$2 r; for r in $(seq "$ROUNDS"); do eval "echo \${$what[$i,$r]}"; done; }
ratios() { # app what -> per-round ratios to bare
  local i=$1 what=$2 r
  for r in $(seq "$ROUNDS"); do
    eval "awk -v a=\${$what[$i,$r]} -v b=\${$what[0,$r]} 'BEGIN {printf \"%.4f\\n\", a/b}'"
  done
}

echo
echo "$ROUNDS rounds of ${SECONDS_PER_RUN} s per app, $CONNECTIONS connections; medians over the rounds"
echo
echo "| app | requests/s | p99 latency (us) | req/s ratio to bare (quartiles) | p99 ratio to bare (quartiles) |"
echo "|---|---:|---:|---:|---:|"
for i in "${!apps[@]}"; do
  r=$(median $(column "$i" rps)); p=$(median $(column "$i" p99))
  if [ "$i" -eq 0 ]; then
    printf '| %s | %.0f | %.0f | — | — |\n' "${apps[$i]}" "$r" "$p"
  else
    rr=$(median $(ratios "$i" rps)); pr=$(median $(ratios "$i" p99))
    rq=$(quartiles $(ratios "$i" rps)); pq=$(quartiles $(ratios "$i" p99))
    printf '| %s | %.0f | %.0f | %.3f (%s) | %.3f (%s) |\n' "${apps[$i]}" "$r" "$p" "$rr" "$rq" "$pr" "$pq"
  fi
done
# The layer's cost beside the floor's: the share of bare's requests/s each gives up,
# taken within each round (1 - app/bare), as medians over the rounds.
given_up() { # app -> per-round 1 - rps[app]/rps[bare]
  local r
  for r in $(seq "$ROUNDS"); do
    eval "awk -v a=\${rps[$1,$r]} -v b=\${rps[0,$r]} 'BEGIN {printf \"%.5f\\n\", 1 - a/b}'"
  done
}
echo
for i in 1 2 4 5; do
  app=$(median $(given_up "$i")); floor=$(median $(given_up 3))
  awk -v n="${apps[$i]}" -v a="$app" -v f="$floor" 'BEGIN {
    printf "requests/s given up: %s %.1f %%, floor %.1f %% (%.2f × the floor)\n", n, 100 * a, 100 * f, (f > 0 ? a / f : 0) }'
done
echo
echo "Targets: req/s ratio >= 0.97, p99 ratio <= 1.05 (median of the per-round ratios)."
