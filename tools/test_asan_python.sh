#!/bin/sh
# Builds the torch extension with AddressSanitizer + UndefinedBehaviorSanitizer
# into its own directory and runs the aliasing, reliability, sliding-window
# and stream tests against it (libasan preloaded into the interpreter);
# any sanitizer report fails the run. Leak checking is off: CPython and torch
# keep memory until exit.
# Env: BUILD_DIR (default <repo>/build-asan-torch), JOBS (default 2).
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$repo/build-asan-torch}
jobs=${JOBS:-2}
py="$repo/.venv/bin/python"
package="$build/pkg/torch_tfmbs"

prefix=$(TORCH_DEVICE_BACKEND_AUTOLOAD=0 "$py" -c \
  "import torch.utils, pybind11; print(torch.utils.cmake_prefix_path + ';' + pybind11.get_cmake_dir())")
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTFMBS_SANITIZE=ON \
  -DCMAKE_PREFIX_PATH="$prefix" -DTFMBS_EXTENSION_DIR="$package" >/dev/null
cmake --build "$build" -j"$jobs" --target _C
# The package's Python files beside the sanitized _C.
cp "$repo"/torch_tfmbs/*.py "$package/"

# The editable install's import hook would find the regular build: drop it,
# and put the sanitized package first (tests that start subprocesses run
# those with the regular build).
cd "$repo"
LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)" \
ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=0} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
  "$py" - "$build/pkg" <<'PY'
import os
import sys

# The devices tests/conftest.py sets up, before the package is first imported.
for name, value in (("TFMBS_NUM_FABRICS", "2"), ("TFMBS_MEMORY", "1GiB"), ("TFMBS_FALLBACK", "allow")):
    os.environ.setdefault(name, value)
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path.insert(0, sys.argv[1])
import torch_tfmbs  # noqa: E402
assert torch_tfmbs._C.__file__.startswith(sys.argv[1]), torch_tfmbs._C.__file__
import pytest  # noqa: E402
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-W", "ignore::UserWarning",
                      "tests/test_aliasing.py", "tests/test_reliability.py",
                      "tests/test_sliding_window.py", "tests/test_streams.py"]))
PY
echo "test_asan_python.sh: aliasing, reliability, sliding-window and stream tests clean under ASan + UBSan"
