#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU and a CUDA
# libtorch (a PyTorch wheel's):
#
#   ./build.sh gpu-check [REPORT.json]      (default gpu-report.json)
#
# builds the shim against that libtorch (found through LIBTORCH, Torch_DIR or
# python3's torch), runs the CUDA tests, trains and samples the tiny preset on
# the GPU in float32, bf16 and fp16, runs `ddpm bench` in the three precisions
# (small preset batch 64, cifar10 preset batch 64), and writes one JSON report.
# It installs nothing. Without Go on the machine it uses bin/ddpm and the test
# binaries that `./build.sh gpu-prepare` builds on a machine with Go (carry
# bin/ over). Every step has a time limit; the whole check is made to finish
# within 8 minutes on one GPU. The exit status is 0 only when every test and
# every run passed.
set -uo pipefail
cd "$(dirname "$0")"
root=$(pwd)
report=${1:-gpu-report.json}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
began=$(date +%s)
say() { printf 'gpu-check: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# ---- a CUDA libtorch ----------------------------------------------------------
torch_dir=${Torch_DIR:-}
if [ -z "$torch_dir" ] && [ -n "${LIBTORCH:-}" ]; then
  torch_dir=$LIBTORCH/share/cmake/Torch
fi
if [ -z "$torch_dir" ]; then
  prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null) ||
    die "no libtorch with CUDA: set LIBTORCH (an unpacked libtorch) or Torch_DIR, or install PyTorch for python3"
  torch_dir=$prefix/Torch
fi
[ -f "$torch_dir/TorchConfig.cmake" ] || die "no TorchConfig.cmake in $torch_dir"
command -v nvidia-smi >/dev/null 2>&1 || die "no nvidia-smi: this check needs an NVIDIA GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$work/gpu.txt" 2>&1 ||
  die "nvidia-smi sees no GPU: $(head -1 "$work/gpu.txt")"

# ---- the shim, against it -------------------------------------------------------
say "building the shim against $torch_dir"
if ! timeout 300 cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DTorch_DIR="$torch_dir" >"$work/cmake.log" 2>&1; then
  tail -20 "$work/cmake.log" >&2
  die "cmake configure failed"
fi
if ! timeout 300 cmake --build build-cuda -j"$(nproc)" >"$work/build.log" 2>&1; then
  grep -E "error" "$work/build.log" | head -20 >&2
  die "building the shim failed"
fi

# ---- the Go side: built here, or carried -----------------------------------------
tests=(torch diffusion/unet)
if command -v go >/dev/null 2>&1; then
  say "building bin/ddpm and the test binaries"
  export CGO_ENABLED=1
  go build -trimpath -o bin/ddpm ./cmd/ddpm || die "go build failed"
  for p in "${tests[@]}"; do
    go test -c -o "bin/$(basename "$p").test" "./$p" || die "go test -c ./$p failed"
  done
fi
for f in bin/ddpm bin/torch.test bin/unet.test; do
  [ -x "$f" ] || die "no $f and no Go here: run ./build.sh gpu-prepare on a machine with Go and carry bin/"
done
bin/ddpm version >"$work/version.txt" 2>&1 || die "bin/ddpm does not run over the new shim: $(head -3 "$work/version.txt")"
grep -q "^cuda *available" "$work/version.txt" ||
  die "libtorch sees no CUDA device: $(grep '^cuda' "$work/version.txt")"

# ---- checks: each one a name, a time limit and a command --------------------------
results="$work/results.tsv"
: >"$results"
check() { # name seconds command...
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s%N)
  timeout "$limit" "$@" >"$work/$name.out" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((($(date +%s%N) - t0) / 1000000))" >>"$results"
  if [ "$rc" = 0 ]; then say "ok    $name"; else say "FAIL  $name (exit $rc)"; fi
}
# The test binaries run in their package folder, as go test runs them: the
# whole torch package (the shim's contract on this libtorch), then the
# U-Net's CUDA test (float32, bf16 and fp16 against the CPU).
check test-torch 150 bash -c "cd torch && ../bin/torch.test -test.count=1"
check test-unet-cuda 120 bash -c "cd diffusion/unet && ../../bin/unet.test -test.count=1 -test.run CUDA -test.v"
for prec in float32 bf16 fp16; do
  run="$work/run-$prec"
  check "train-tiny-$prec" 120 bin/ddpm train --preset tiny --steps 60 --batch 64 --sample-every 0 --precision "$prec" --device cuda --out "$run" -q
  check "sample-tiny-$prec" 60 bin/ddpm sample --run "$run" --n 64 --steps 20 --precision "$prec" --device cuda --out "$work/sample-$prec.png" --quiet
done
for cfg in "small 64" "cifar10 64"; do
  set -- $cfg
  for prec in float32 bf16 fp16; do
    check "bench-$1-b$2-$prec" 120 bin/ddpm bench --preset "$1" --batch "$2" --precision "$prec" --device cuda --json
  done
done

# ---- the report ---------------------------------------------------------------------
python3 - "$work" "$report" "$(($(date +%s) - began))" <<'PY'
import json, os, sys
work, report, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def text(name):
    with open(os.path.join(work, name), errors="replace") as f:
        return f.read()
checks = []
for line in text("results.tsv").splitlines():
    name, rc, secs = line.split("\t")
    out = text(name + ".out")
    c = {"name": name, "exit": int(rc), "seconds": int(secs) / 1000}
    if name.startswith("bench-") and rc == "0":
        c["bench"] = json.loads(out[out.index("{"):])
    elif rc != "0":
        c["output_tail"] = out[-4000:]
    checks.append(c)
doc = {"gpu": text("gpu.txt").strip(), "ddpm_version": text("version.txt").strip(), "seconds": seconds,
       "passed": all(c["exit"] == 0 for c in checks), "checks": checks}
with open(report, "w") as f:
    json.dump(doc, f, indent=2)
print(f"gpu-check: wrote {report}: {sum(c['exit'] == 0 for c in checks)} of {len(checks)} checks passed in {seconds} s")
sys.exit(0 if doc["passed"] else 1)
PY
