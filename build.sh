#!/usr/bin/env bash
# One setup command.
#   ./build.sh         install what is missing (Debian, as root), build the
#                      libtorch shim into lib/ and the CLI into bin/ddpm
#   ./build.sh test    build, then run every test
#   ./build.sh gpu-check [REPORT.json]
#                      on a machine with a GPU and a CUDA libtorch: the shim
#                      against it, the CUDA tests and benchmarks, one JSON
#                      report (see gpu-check.sh); installs nothing
#   ./build.sh gpu-prepare
#                      build, plus the test binaries gpu-check runs on a GPU
#                      machine without Go (carry bin/ there)
#
# Another libtorch (a PyTorch wheel's, with CUDA) is chosen with
#   LIBTORCH=/path/to/libtorch ./build.sh       (a folder holding share/cmake/Torch)
#   Torch_DIR=/path/to/share/cmake/Torch ./build.sh
# or by unpacking one under third_party/libtorch.
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
mode=${1:-build}
case "$mode" in
  build | test | gpu-prepare) ;;
  gpu-check) exec ./gpu-check.sh "${@:2}" ;;
  *) echo "usage: ./build.sh [test | gpu-check [REPORT.json] | gpu-prepare]" >&2; exit 2 ;;
esac

say() { printf 'build.sh: %s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

# ---- where libtorch comes from --------------------------------------------
torch_dir=${Torch_DIR:-}
if [ -z "$torch_dir" ] && [ -n "${LIBTORCH:-}" ]; then
  torch_dir="$LIBTORCH/share/cmake/Torch"
fi
if [ -z "$torch_dir" ] && [ -d third_party/libtorch/share/cmake/Torch ]; then
  torch_dir="$root/third_party/libtorch/share/cmake/Torch"
fi
if [ -n "$torch_dir" ] && [ ! -f "$torch_dir/TorchConfig.cmake" ]; then
  die "no TorchConfig.cmake in $torch_dir (set LIBTORCH to an unpacked libtorch folder)"
fi

# ---- system packages ----------------------------------------------------------
# Debian packages: what the build needs, what makes it fast (OpenBLAS: a U-Net
# training step runs several times faster than on the reference BLAS), the
# default dataset, and what the tests compare against (PyTorch, SciPy).
need=(cmake g++ libopenblas0-pthread dataset-fashion-mnist libgloo-dev
      python3-torch python3-scipy python3-numpy ccache)
[ -z "$torch_dir" ] && need+=(libtorch-dev)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing Debian packages: ${missing[*]}"
    say "install them with: sudo apt-get install ${missing[*]}"
    command -v cmake >/dev/null && command -v g++ >/dev/null || exit 1
  fi
fi
command -v cmake >/dev/null || die "cmake is required (apt-get install cmake)"
command -v g++ >/dev/null || die "a C++17 compiler is required (apt-get install g++)"

# ---- Go ----------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
  [ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null || die "Go 1.24 or newer is required (https://go.dev/dl/)"
export CGO_ENABLED=1

# ---- the shim -----------------------------------------------------------------
cmake_args=(-S . -B build -DCMAKE_BUILD_TYPE=Release)
[ -n "$torch_dir" ] && cmake_args+=("-DTorch_DIR=$torch_dir")
command -v ccache >/dev/null && cmake_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake "${cmake_args[@]}" >build.cmake.log 2>&1 || { cat build.cmake.log >&2; die "cmake configure failed"; }
rm -f build.cmake.log
if ! cmake --build build -j"$(nproc)" >build/build.log 2>&1; then
  grep -E "error|Error" build/build.log >&2 || cat build/build.log >&2
  die "building the shim failed (full log: build/build.log)"
fi
[ -f lib/libddpmtorch.so ] || die "building the shim failed: no lib/libddpmtorch.so"

# ---- the CLI ------------------------------------------------------------------
go build -trimpath -o bin/ddpm ./cmd/ddpm
say "built bin/ddpm (shim: lib/libddpmtorch.so)"

if [ "$mode" = gpu-prepare ]; then
  go test -c -o bin/torch.test ./torch
  go test -c -o bin/unet.test ./diffusion/unet
  say "built bin/torch.test and bin/unet.test for ./build.sh gpu-check"
fi

if [ "$mode" = test ]; then
  say "running tests"
  go vet ./...
  go test -count=1 -timeout 60m ./...
  # The pipeline is documented as safe for concurrent use: its tests again
  # under the race detector.
  go test -race -count=1 -timeout 20m ./diffusion/pipeline/
  # So is the serving engine, whose scheduler goroutine meets many callers.
  go test -race -count=1 -timeout 20m ./diffusion/serve/
fi
