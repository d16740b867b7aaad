#!/usr/bin/env bash
# Run every fuzz harness for a bounded time; fail on any crash, unexpected
# exception, hang (-timeout) or runaway memory (-rss_limit_mb).
#
#   bash tests/fuzz/run.sh [SECONDS]        # SECONDS per harness, default 60
#
# Env: PYTHON (default python), FUZZ_ARTIFACTS (where failing inputs are
# written; default a fresh temporary directory, printed at the end),
# FUZZ_ARGS (extra libFuzzer flags, e.g. "-jobs=4 -workers=4").
# The committed seeds in tests/fuzz/corpus/ are only read: new corpus units
# go to a scratch directory. See tests/fuzz/README.md to run longer.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECONDS_EACH="${1:-60}"
PYTHON="${PYTHON:-python}"
ARTIFACTS="${FUZZ_ARTIFACTS:-$(mktemp -d -t sparsenet-fuzz-artifacts-XXXXXX)}"
WORK="$(mktemp -d -t sparsenet-fuzz-corpus-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$ARTIFACTS"

if ! "$PYTHON" -c "import atheris" 2>/dev/null; then
  echo "fuzz: atheris is not installed (pip install atheris)" >&2
  exit 2
fi

failed=0
for harness in load model; do
  mkdir -p "$WORK/$harness"
  log="$ARTIFACTS/$harness.log"
  start=$(date +%s)
  # The seeds are replayed first, then mutated for SECONDS_EACH seconds.
  # shellcheck disable=SC2086
  "$PYTHON" "$HERE/fuzz_$harness.py" "$WORK/$harness" "$HERE/corpus/$harness" \
    -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2048 \
    -artifact_prefix="$ARTIFACTS/$harness-" -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1
  status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "fuzz_$harness: ${runs:-?} inputs in $(( $(date +%s) - start )) s, exit status $status"
  if [ "$status" -ne 0 ]; then
    failed=1
    grep -v '^INFO: Instrumenting' "$log" | tail -60
  fi
done

# The C++ loader under libFuzzer (clang with libFuzzer, ASan and UBSan),
# on the same seeds (one options byte, then the file).
if command -v "${FUZZ_CXX:-clang++}" >/dev/null 2>&1; then
  log="$ARTIFACTS/cpp_load.log"
  start=$(date +%s)
  if ! bash "$HERE/cpp/build.sh" "$WORK/cpp-build" >"$ARTIFACTS/cpp_build.log" 2>&1; then
    echo "cpp_load: build failed"; tail -30 "$ARTIFACTS/cpp_build.log"; failed=1
  else
    mkdir -p "$WORK/cpp_load"
    # shellcheck disable=SC2086
    "$WORK/cpp-build/load_fuzzer" "$WORK/cpp_load" "$HERE/corpus/load" -max_total_time="$SECONDS_EACH" \
      -timeout=20 -rss_limit_mb=2048 -artifact_prefix="$ARTIFACTS/cpp_load-" -print_final_stats=1 \
      ${FUZZ_ARGS:-} >"$log" 2>&1
    status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "cpp_load: ${runs:-?} inputs in $(( $(date +%s) - start )) s, exit status $status"
    if [ "$status" -ne 0 ]; then failed=1; tail -60 "$log"; fi
  fi
else
  echo "cpp_load: skipped (no clang++; apt-get install clang libclang-rt-14-dev)"
fi

if [ "$failed" -ne 0 ]; then
  echo "fuzz: FAILED; failing inputs and logs in $ARTIFACTS (replay: $PYTHON tests/fuzz/fuzz_<harness>.py FILE)"
  exit 1
fi
echo "fuzz: no findings (logs in $ARTIFACTS)"
