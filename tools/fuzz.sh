#!/bin/sh
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and
# runs each one for SECONDS seconds (default 60, each target - not a budget
# shared between them). Exits non-zero on the first finding; the crashing
# input is left in build-fuzz/artifacts/.
# Env: SECONDS (or FUZZ_SECONDS), BUILD_DIR (default <repo>/build-fuzz),
#      JOBS (default 2), FUZZ_TARGETS (default: all three).
# Plain sh on purpose: in bash, SECONDS is a clock that keeps counting.
set -eu
secs=${FUZZ_SECONDS:-${SECONDS:-0}}
case "$secs" in '' | *[!0-9]*) echo "fuzz.sh: SECONDS='$secs' is not a whole number of seconds" >&2; exit 2 ;; esac
[ "$secs" -gt 0 ] || secs=60

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-fuzz}
jobs=${JOBS:-2}
targets=${FUZZ_TARGETS:-"fuzz_pt5_decode fuzz_t2b_decode fuzz_tfd_validate"}

CC=clang CXX=clang++ cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTFMBS_FUZZ=ON -DTFMBS_WITH_TORCH=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target $targets

mkdir -p "$build/artifacts"
for t in $targets; do
  corpus="$build/corpus/$t"
  mkdir -p "$corpus"
  echo "== $t: ${secs}s"
  if ! "$build/tests/fuzz/$t" -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="$build/artifacts/$t-" "$corpus" >"$build/$t.log" 2>&1; then
    tail -n 40 "$build/$t.log" >&2
    echo "fuzz.sh: $t found a problem; see $build/$t.log and $build/artifacts/" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$build/$t.log" | tail -n 2
done
echo "fuzz.sh: no findings (${secs}s per target)"
