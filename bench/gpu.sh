#!/usr/bin/env bash
# ONNX Runtime with the TensorRT and CUDA providers vs torch eager on CUDA, on a machine with an NVIDIA GPU.
# Self-contained: bench/onnx.py exports a bundle of the real architectures (untrained weights: same graphs,
# same timings) into a temp dir, then prints p50/p95 per model, the 256x256 segmentation step in fps,
# the CRF against pydensecrf and the model sizes. Needs onnxruntime-gpu (with CUDA / TensorRT libraries)
# and a CUDA build of torch in the Python it runs: PYTHON=/path/to/python bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
ITERS="${ITERS:-100}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" - <<'PYEOF'
import onnxruntime as ort, torch
print("onnxruntime", ort.__version__, "providers:", ort.get_available_providers())
print("torch", torch.__version__, "cuda:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PYEOF
AVAIL="$("$PY" -c 'import onnxruntime as o; print(",".join(o.get_available_providers()))')"
DEV=cpu; "$PY" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' && DEV=cuda
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
"$PY" -c "
import sys; sys.path.insert(0, '.')
from pathlib import Path
from robot.export_cli import ExportConfig, export_bundle, write_demo_sources
run, seg = write_demo_sources(Path('$TMP/src'), tiny=False)
export_bundle(ExportConfig(out=Path('$TMP/bundle'), explore_run=run, segmenter=seg, imgsz=256, fp16=True,
              eval_frames=8), log=lambda m: None)
print('bundle ready')"
if [[ "$AVAIL" == *CUDAExecutionProvider* ]]; then
  echo "=== CUDA provider (fp32) ==="
  "$PY" bench/onnx.py --bundle "$TMP/bundle" --providers cuda --device "$DEV" --iters "$ITERS" --threads 4
fi
if [[ "$AVAIL" == *TensorrtExecutionProvider* ]]; then
  echo "=== TensorRT provider (fp32, then fp16) ==="
  "$PY" bench/onnx.py --bundle "$TMP/bundle" --providers tensorrt,cuda --device "$DEV" --iters "$ITERS" --threads 4
  "$PY" bench/onnx.py --bundle "$TMP/bundle" --providers tensorrt,cuda --precision fp16 --device "$DEV" \
      --iters "$ITERS" --threads 4
fi
if [[ "$AVAIL" != *CUDAExecutionProvider* ]]; then
  echo "no CUDA provider in this onnxruntime (pip install onnxruntime-gpu); CPU figures only:"
  "$PY" bench/onnx.py --bundle "$TMP/bundle" --providers cpu --device "$DEV" --iters "$ITERS"
fi
