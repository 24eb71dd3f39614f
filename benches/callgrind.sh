#!/usr/bin/env bash
# Instructions per request for every scenario, counted by valgrind's callgrind: exact
# and repeatable (the same binary gives the same counts whatever else the machine is
# doing), so ratios between rows can be trusted on a busy machine where times cannot.
#
#   bash benches/callgrind.sh                        # every scenario
#   bash benches/callgrind.sh untouched hook         # the scenarios naming either
#   bash benches/callgrind.sh --locked [row ...]     # locked instructions instead
#   bash benches/callgrind.sh --copies [row ...]     # calls to memcpy/memmove instead
#
# `--locked` counts the x86 read-modify-writes (`lock`-prefixed, and `xchg` with
# memory) that reference counts, compare-and-swaps and mutexes compile to. Each
# drains the core's store buffer: one costs about as much as a hundred plain
# instructions here (BENCHMARKS.md), so instruction counts alone understate them.
# They are summed from callgrind's per-instruction counts at the addresses objdump
# shows to be locked, in the bench binary's own code (ours, tokio's, the peers'; not
# libc), leaving out the counting allocator's increment (an artefact of this binary).
#
# `--copies` counts the calls to libc's memcpy and memmove: what moves of a value
# too large to copy inline (over 128 bytes: a response, a future, the context)
# compile to. Natively such a move costs far more than its instructions, as a rule
# 5–10 ns here: the copy reads a value whose bytes were just stored in smaller
# pieces, and the wide loads wait for those stores to retire (BENCHMARKS.md,
# "Where the time goes natively").
#
# Each scenario runs alone (SCENARIO==name) after the bare baseline; two runs of the
# baseline alone at different request counts take out the fixed start-up cost.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=instructions
case "${1:-}" in
  --locked) mode=locked; shift ;;
  --copies) mode=copies; shift ;;
esac

if ! command -v valgrind >/dev/null 2>&1 || ! command -v objdump >/dev/null 2>&1; then
  echo "installing valgrind and binutils from Debian's packages" >&2
  (apt-get update -qq && apt-get install -y -qq valgrind binutils) >/dev/null
fi

cargo bench --bench allocations --no-run >&2 2>&1
bin=$(realpath "$(ls -t target/release/deps/allocations-* | grep -v '\.d$' | head -n 1)")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

if [ "$mode" = locked ]; then
  unit="locked/req"
  objdump -d --no-show-raw-insn "$bin" |
    awk -F'\t' '$2 ~ /^(lock |xchg .*\()/ && $0 !~ /counting(::|[0-9]+)ALLOCATIONS/ {
      addr = $1; sub(/^ +/, "", addr); sub(/:$/, "", addr); print "0x" addr
    }' >"$out/locked"
  count() { # SCENARIO ROUNDS -> locked instructions executed in the bench binary
    SCENARIO="$1" ROUNDS="$2" valgrind --tool=callgrind --dump-instr=yes --compress-pos=no \
      --compress-strings=no --callgrind-out-file="$out/cg" "$bin" >/dev/null 2>"$out/log"
    awk -v bin="$bin" '
      NR == FNR { locked[$1] = 1; next }
      skip { skip = 0; next }                # a call'"'"'s cost line: inclusive
      /^calls=/ { skip = 1; next }
      /^ob=/ { mine = (substr($0, 4) == bin); next }
      mine && ($1 in locked) { n += $NF }
      END { print n + 0 }' "$out/locked" "$out/cg"
  }
elif [ "$mode" = copies ]; then
  unit="copies/req"
  count() { # SCENARIO ROUNDS -> calls to memcpy and memmove
    SCENARIO="$1" ROUNDS="$2" valgrind --tool=callgrind --compress-strings=no \
      --callgrind-out-file="$out/cg" "$bin" >/dev/null 2>"$out/log"
    awk '
      /^cfn=/ { copy = ($0 ~ /(memcpy|memmove)/); next }
      /^calls=/ { if (copy) { split($1, c, "="); n += c[2] }; next }
      END { print n + 0 }' "$out/cg"
  }
else
  unit="instr/req"
  count() { # SCENARIO ROUNDS -> total instructions
    SCENARIO="$1" ROUNDS="$2" valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" >/dev/null 2>"$out/log"
    awk '/Collected :/ {print $NF}' "$out/log"
  }
fi

n=1000
base_n=$(count "-none-" "$n")
base_2n=$(count "-none-" $((2 * n)))
# Per request of the bare service, and the fixed cost of a run with the baseline.
bare=$(( (base_2n - base_n) / n ))

# The scenario names, from a quick run of one request each.
scenarios=$(ROUNDS=1 "$bin" 2>/dev/null | awk 'NR > 2 {sub(/ +[0-9.]+ +[+-][0-9.]+$/, ""); print}')
printf '%-62s %12s %12s\n' "scenario" "$unit" "added"
printf '%-62s %12d %12s\n' "bare service_fn" "$bare" "+0"
while IFS= read -r name; do
  if [ "$#" -gt 0 ]; then
    wanted=no
    for part in "$@"; do [[ "$name" == *"$part"* ]] && wanted=yes; done
    [ "$wanted" = yes ] || continue
  fi
  # `=`: this scenario alone, though its name may be part of another's.
  total=$(count "=$name" "$n")
  per=$(( (total - base_n) / n ))
  printf '%-62s %12d %+12d\n' "$name" "$per" $((per - bare))
done <<<"$scenarios"
