#!/usr/bin/env bash
# The GPU verification of regrisk in one command, on an NVIDIA GPU machine (H100 class):
# build the package with the CUDA kernels, run the GPU tests (a skipped GPU test fails the run),
# then the kernel and engine benchmarks. Prints everything and leaves, under $OUT (default
# out/gpu_suite/): suite.log, tests.log, gpu_kernels.{txt,json}, gpu_engine.{txt,json}
# and gpu_results.md (the figures, ready for the "## GPU" section of benchmarks/RESULTS.md).
#
#   bash benchmarks/gpu_suite.sh            # all stages
#   bash benchmarks/gpu_suite.sh build test # some stages: build | test | kernels | engine
#
# Prerequisites on the machine (it may have no network): nvcc (CUDA 12 or 13), a C++ compiler,
# Python >= 3.10 with numpy scipy nibabel onnx onnxruntime tqdm matplotlib pytest hypothesis
# pybind11 scikit-build-core, torch with CUDA, and CuPy for the installed CUDA major version
# (cupy-cuda12x / cupy-cuda13x). Optional: onnxruntime-gpu (ORT CUDA rows and tests), tensorrt.
# Environment: SAMPLES (50), BATCH (8), GRID ("160 192 224"), REPEATS (3), SKIP_ONNX=1 to leave
# out the ONNX Runtime / TensorRT engine rows (their export and cuDNN/TensorRT tuning take minutes).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${OUT:-$ROOT/out/gpu_suite}"  # out/ is git-ignored
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
SAMPLES="${SAMPLES:-50}"
BATCH="${BATCH:-8}"
GRID="${GRID:-160 192 224}"
REPEATS="${REPEATS:-3}"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(build test kernels engine)
exec > >(tee -a "$OUT_DIR/suite.log") 2>&1

FAILED=()
want() { local s; for s in "${STAGES[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
say() { printf '\n=== %s ===\n' "$*"; }
die() { echo "gpu_suite: $*" >&2; exit 1; }

say "machine ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA driver on this machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv
command -v nvcc >/dev/null || die "nvcc not found: the CUDA kernels cannot be built"
nvcc --version | tail -n 2
"$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
missing = []
for name in ("numpy", "scipy", "nibabel", "onnx", "onnxruntime", "pytest", "hypothesis",
             "pybind11", "scikit_build_core", "torch", "cupy"):
    try:
        mod = importlib.import_module(name)
        print(f"  {name} {getattr(mod, '__version__', '?')}")
    except Exception as exc:
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
import torch
print(f"  torch.cuda.is_available() = {torch.cuda.is_available()}")
if missing:
    sys.exit("gpu_suite: missing prerequisites: " + "; ".join(missing))
if not torch.cuda.is_available():
    sys.exit("gpu_suite: this torch has no CUDA; install a CUDA build of torch")
EOF

if want build; then
  say "build (pip install -e ., CUDA kernels for sm_80, sm_90 and compute_90 PTX)"
  # Architectures passed explicitly: the build must not depend on nvcc's default target.
  "$PY" -m pip install --no-build-isolation --no-deps -e . \
    -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="80-real;90-real;90-virtual" \
    -Ccmake.define.REGRISK_CUDA=ON
  "$PY" -c "import regrisk._cuda as c, regrisk.kernels as k; print('regrisk._cuda:', c.__file__); print('build:', k.build_info())"
fi

"$PY" - <<'EOF'
import json
from regrisk import device
r = device.device_report()
print(json.dumps({k: r[k] for k in ("cuda_ready", "cuda_reason", "cuda_backends")}, indent=1))
if not r["cuda_ready"]:
    raise SystemExit(f"gpu_suite: the CUDA path cannot run: {r['cuda_reason']}")
EOF

if want test; then
  say "GPU tests (REGRISK_REQUIRE_GPU=1: a GPU test that skips fails the run)"
  REGRISK_REQUIRE_GPU=1 "$PY" -m pytest -q -rs -p no:cacheprovider \
    tests/test_kernels.py tests/test_kernels_args.py tests/test_cuda_kernels.py \
    tests/test_gpu_backends.py 2>&1 | tee "$OUT_DIR/tests.log" \
    || FAILED+=(tests)  # keep going: the benchmarks are still worth having
fi

if want kernels; then
  say "kernels vs device-to-device copy bandwidth"
  # shellcheck disable=SC2086
  "$PY" benchmarks/gpu_kernels.py --grid $GRID --batch "$BATCH" --json "$OUT_DIR/gpu_kernels.json" \
    | tee "$OUT_DIR/gpu_kernels.txt" || FAILED+=(kernels)
fi

if want engine; then
  say "engine vs plain PyTorch, K=$SAMPLES at ${GRID// /x}"
  ONNX_ARGS=()
  if [ "${SKIP_ONNX:-0}" != "1" ]; then
    ONNX_DIR="$(mktemp -d)"
    ONNX_ARGS=(--onnx-dir "$ONNX_DIR")
  fi
  # shellcheck disable=SC2086
  "$PY" benchmarks/gpu_engine.py --grid $GRID --samples "$SAMPLES" --batch "$BATCH" \
    --repeats "$REPEATS" "${ONNX_ARGS[@]}" --json "$OUT_DIR/gpu_engine.json" \
    | tee "$OUT_DIR/gpu_engine.txt" || FAILED+=(engine)
fi

say "figures for benchmarks/RESULTS.md (## GPU)"
"$PY" - "$OUT_DIR" <<'EOF' | tee "$OUT_DIR/gpu_results.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
k, e = out / "gpu_kernels.json", out / "gpu_engine.json"
if k.exists():
    d = json.loads(k.read_text())
    g = "x".join(map(str, d["grid"]))
    print(f"Kernels on {d['device']} (`bash benchmarks/gpu_suite.sh`, grid {g}, batch {d['batch']}; "
          f"device-to-device copy {d['copy_gbps']:.0f} GB/s in the same run):\n")
    print("| kernel | GPU ms | GB/s | of copy | >= 60% |\n|---|---:|---:|---:|:---:|")
    for r in d["kernels"]:
        print(f"| {r['kernel']} | {r['gpu_ms']:.3f} | {r['gbps']:.0f} | {r['fraction_of_copy']:.0%} | "
              f"{'yes' if r['meets_floor'] else 'no'} |")
    print()
if e.exists():
    d = json.loads(e.read_text())
    g = "x".join(map(str, d["grid"]))
    print(f"Engine vs plain PyTorch on {d['device']} (K={d['samples']}, {g}, VoxelMorph-size U-Net, "
          f"micro-batch {d['batch']}):\n")
    print("| method | total s | vs plain batch 1 | non-inference share |\n|---|---:|---:|---:|")
    for r in d["rows"]:
        print(f"| {r['method']} | {r['total_s']:.3f} | {r['speedup_vs_plain']:.2f}x | "
              f"{r['non_inference_share']:.1%} |")
    print()
    for r in d["rows"]:
        split = ", ".join(f"{s} {v:.3f}" for s, v in r["split_s"].items() if v >= 0.0005)
        print(f"- {r['method']}: {split}")
EOF
say "done; outputs in $OUT_DIR"
if [ ${#FAILED[@]} -gt 0 ]; then
  die "stage(s) failed: ${FAILED[*]} (see $OUT_DIR/suite.log)"
fi
