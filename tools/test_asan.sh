#!/bin/sh
# Builds the fabric (no torch) with AddressSanitizer + UndefinedBehavior-
# Sanitizer in its own build dir and runs fabric_tests; any sanitizer report
# fails the run (-fno-sanitize-recover=all, halt_on_error).
# Env: BUILD_DIR (default <repo>/build-asan), JOBS (default 2), and
# GTEST_FILTER as usual.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-asan}
jobs=${JOBS:-2}

cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTFMBS_SANITIZE=ON -DTFMBS_WITH_TORCH=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target fabric_tests

ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:strict_string_checks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
  "$build/tests/cpp/fabric_tests" --gtest_brief=1
echo "test_asan.sh: fabric_tests clean under ASan + UBSan"
