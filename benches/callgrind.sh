#!/usr/bin/env bash
# Instructions per request for every scenario, counted by valgrind's callgrind: exact
# and repeatable (the same binary gives the same counts whatever else the machine is
# doing), so ratios between rows can be trusted on a busy machine where times cannot.
#
#   bash benches/callgrind.sh
#
# Each scenario runs alone (SCENARIO=...) after the bare baseline; two runs of the
# baseline alone at different request counts take out the fixed start-up cost.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null 2>&1; then
  echo "installing valgrind from Debian's packages" >&2
  (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null
fi

cargo bench --bench allocations --no-run >&2 2>&1
bin=$(ls -t target/release/deps/allocations-* | grep -v '\.d$' | head -n 1)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

count() { # SCENARIO ROUNDS -> total instructions
  SCENARIO="$1" ROUNDS="$2" valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" >/dev/null 2>"$out/log"
  awk '/Collected :/ {print $NF}' "$out/log"
}

n=1000
base_n=$(count "-none-" "$n")
base_2n=$(count "-none-" $((2 * n)))
# Per request of the bare service, and the fixed cost of a run with the baseline.
bare=$(( (base_2n - base_n) / n ))

# The scenario names, from a quick run of one request each.
scenarios=$(ROUNDS=1 "$bin" 2>/dev/null | awk 'NR > 2 {sub(/ +[0-9.]+ +[+-][0-9.]+$/, ""); print}')
printf '%-62s %12s %12s\n' "scenario" "instr/req" "added"
printf '%-62s %12d %12s\n' "bare service_fn" "$bare" "+0"
while IFS= read -r name; do
  total=$(count "$name" "$n")
  per=$(( (total - base_n) / n ))
  printf '%-62s %12d %+12d\n' "$name" "$per" $((per - bare))
done <<<"$scenarios"
