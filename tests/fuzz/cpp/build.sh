#!/usr/bin/env bash
# Build the libFuzzer harness for the C++ loader with clang (ASan + UBSan):
#   bash tests/fuzz/cpp/build.sh OUT_DIR      -> OUT_DIR/load_fuzzer
# Needs clang++ with libFuzzer (Debian: apt-get install clang libclang-rt-14-dev)
# and the scipy-openblas32 wheel for the dense baseline's OpenBLAS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
OUT="${1:?usage: build.sh OUT_DIR}"
PYTHON="${PYTHON:-python}"
CXX="${FUZZ_CXX:-clang++}"
mkdir -p "$OUT/obj"
OPENBLAS_INC="$("$PYTHON" -c "import scipy_openblas32 as o; print(o.get_include_dir())")"
OPENBLAS_LIB="$("$PYTHON" -c "import scipy_openblas32 as o; print(o.get_lib_dir())")"
FLAGS=(-std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined
       -fno-sanitize-recover=undefined -I"$ROOT/csrc/include" -I"$OPENBLAS_INC")
objects=()
for source in "$ROOT"/csrc/src/*.cc "$ROOT"/csrc/kernels/scalar/*.cc "$ROOT"/csrc/kernels/avx2/*.cc \
              "$ROOT"/csrc/kernels/avx512/*.cc; do
  object="$OUT/obj/$(basename "$(dirname "$source")")_$(basename "$source" .cc).o"
  extra=()
  case "$source" in
    */avx2/*) extra=(-mavx2 -mfma) ;;
    */avx512/*) extra=(-mavx2 -mfma -mavx512f -mavx512vl) ;;
  esac
  "$CXX" "${FLAGS[@]}" "${extra[@]}" -c "$source" -o "$object" &
  objects+=("$object")
  while [ "$(jobs -r | wc -l)" -ge "${JOBS:-2}" ]; do wait -n; done
done
wait
"$CXX" "${FLAGS[@]}" -fsanitize=fuzzer "$ROOT/tests/fuzz/cpp/load_fuzzer.cc" "${objects[@]}" \
  -L"$OPENBLAS_LIB" -lscipy_openblas -Wl,-rpath,"$OPENBLAS_LIB" -lpthread -o "$OUT/load_fuzzer"
echo "$OUT/load_fuzzer"
