#!/usr/bin/env bash
# Build sparsenet._core with AddressSanitizer + UndefinedBehaviorSanitizer and
# run the whole pytest suite against it; first, the thread pool's stress test
# under ThreadSanitizer (thread_pool_stress.cc).
#
#   bash tests/sanitize/run.sh [pytest args...]      # e.g. -x -q tests/test_bad_input.py
#
# Env: BUILD_DIR (default build/sanitize; reused, so a rerun only recompiles
# what changed), PYTHON (default python), JOBS (default nproc), FUZZ_SECONDS
# (when set, also run tests/fuzz/run.sh for that long per harness against the
# sanitized module).
# Any ASan report (heap overflow, use after free, ...) or UBSan report
# (signed overflow, misaligned load, out-of-range shift, ...) aborts the
# process, so the run fails. Leak checking is off: CPython keeps its
# interned objects and arenas at exit by design.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python}"
BUILD_DIR="${BUILD_DIR:-$ROOT/build/sanitize}"
JOBS="${JOBS:-$(nproc)}"
FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

start=$(date +%s)
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja \
  -DSPARSENET_BUILD_PYTHON=ON -DSPARSENET_BUILD_EXAMPLES=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$FLAGS" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" \
  -DPython_EXECUTABLE="$(command -v "$PYTHON")" >/dev/null
cmake --build "$BUILD_DIR" --target _core -j "$JOBS"
built=$(date +%s)

# The package sources with the sanitized module, in a scratch copy (the
# checkout's own _core stays untouched).
PKG="$(mktemp -d)"
trap 'rm -rf "$PKG"' EXIT
cp -r "$ROOT/python/sparsenet" "$PKG/"
rm -f "$PKG"/sparsenet/_core*.so
cp "$BUILD_DIR"/_core*.so "$PKG/sparsenet/"

CXX="${CXX:-g++}"
PRELOAD="$("$CXX" -print-file-name=libasan.so)"
UBSAN_LIB="$("$CXX" -print-file-name=libubsan.so)"
[ -f "$UBSAN_LIB" ] && PRELOAD="$PRELOAD:$UBSAN_LIB"

cd "$ROOT"
status=0
"$CXX" -std=c++17 -O1 -g -fsanitize=thread -I"$ROOT/csrc/src" -I"$ROOT/csrc/include" \
  "$ROOT/tests/sanitize/thread_pool_stress.cc" "$ROOT/csrc/src/thread_pool.cc" \
  -o "$PKG/thread_pool_stress" -lpthread
TSAN_OPTIONS="halt_on_error=1" "$PKG/thread_pool_stress" || status=$?
[ "$status" -eq 0 ] || echo "sanitize: the thread pool failed under ThreadSanitizer"
env PYTHONPATH="$PKG" \
  LD_PRELOAD="$PRELOAD" \
  ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1" \
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  SPARSENET_SANITIZED=1 \
  "$PYTHON" -m pytest -p no:cacheprovider -q "${@:-tests}" || status=$?
if [ -n "${FUZZ_SECONDS:-}" ] && [ "$status" -eq 0 ]; then
  env PYTHONPATH="$PKG" LD_PRELOAD="$PRELOAD" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    SPARSENET_FUZZ_PACKAGE="$PKG" PYTHON="$PYTHON" bash "$ROOT/tests/fuzz/run.sh" "$FUZZ_SECONDS" || status=$?
fi
end=$(date +%s)
echo "sanitize: build $((built - start)) s, tests $((end - built)) s, exit status $status"
exit $status
