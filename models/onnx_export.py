"""Export a torch module to ONNX and check it: the generic step behind every ``export/`` bundle.

``export_onnx`` runs ``torch.onnx.export(..., dynamo=True, opset_version=18, external_data=False)`` with a
dynamic batch dimension (the example batch must be >= 2), writes ``metadata_props``, runs
``onnx.checker.check_model`` and compares ONNX Runtime (CPU) with torch on the example inputs
(atol 1e-4, rtol 1e-3). It returns the manifest entry (file, sha256, inputs/outputs with shapes and dtypes,
metadata). ``write_manifest`` writes ``manifest.json`` for a bundle.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from microfarm_toolkit import atomic_path, atomic_write_json

__all__ = ["OnnxExportError", "export_onnx", "save_checked", "sha256_file", "write_manifest", "check_onnx",
           "io_desc"]

OPSET = 18


class OnnxExportError(RuntimeError):
    """The exported model failed the checker or differs from torch."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def io_desc(values: Sequence[Any]) -> list[dict[str, Any]]:
    """An ONNX graph's inputs or outputs as the manifest lists them: name, shape (dynamic axes by name), dtype."""
    import onnx

    out = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        out.append({"name": v.name, "shape": shape, "dtype": np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
            t.elem_type)).name})
    return out


def check_onnx(path: str | Path, inputs: dict[str, np.ndarray], expected: Sequence[np.ndarray],
               atol: float = 1e-4, rtol: float = 1e-3) -> float:
    """Run ``path`` in ONNX Runtime (CPU) on ``inputs``; raise unless close to ``expected``. Returns max abs diff."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, inputs)
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        if g.shape != e.shape:
            raise OnnxExportError(f"{Path(path).name}: ONNX output shape {g.shape} != torch {e.shape}")
        worst = max(worst, float(np.max(np.abs(g - e))) if g.size else 0.0)
        if not np.allclose(g, e, atol=atol, rtol=rtol):
            raise OnnxExportError(f"{Path(path).name}: ONNX Runtime differs from torch by {worst:.3g} "
                                  f"(atol {atol}, rtol {rtol})")
    return worst


def save_checked(model: Any, path: Path) -> None:
    """Write the ModelProto ``model`` to ``path`` atomically, then run ``onnx.checker`` (full check) on it;
    ``OnnxExportError`` if the checker rejects it."""
    import onnx

    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise OnnxExportError(f"{path.name}: onnx.checker failed: {e}") from None


def export_onnx(module: nn.Module, example_inputs: Sequence[torch.Tensor], path: str | Path,
                input_names: Sequence[str], output_names: Sequence[str], dynamic_batch: bool = True,
                metadata: dict[str, Any] | None = None, atol: float = 1e-4, rtol: float = 1e-3) -> dict[str, Any]:
    """Export ``module(*example_inputs)`` to ``path`` (opset 18, one file) and check it; returns a manifest entry.

    example_inputs: float tensors, batch first (batch >= 2 when ``dynamic_batch``); metadata values that are
    not strings are stored as JSON in ``metadata_props``.
    """
    import onnx

    path = Path(path)
    module = module.eval()
    example = tuple(t.detach().cpu() for t in example_inputs)
    if dynamic_batch and any(t.shape[0] < 2 for t in example):
        raise ValueError("a dynamic batch needs example inputs with batch >= 2 (else it is fixed at 1)")
    with torch.no_grad():
        ref = module(*example)
    refs = [r.numpy() for r in (ref if isinstance(ref, tuple | list) else (ref,))]
    dyn = {name: {0: "batch"} for name in (*input_names, *output_names)} if dynamic_batch else None
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, example, input_names=list(input_names), output_names=list(output_names),
                                 dynamic_axes=dyn, dynamo=True, opset_version=OPSET, external_data=False,
                                 verbose=False)
    model = prog.model_proto
    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    save_checked(model, path)
    feeds = {n: t.numpy() for n, t in zip(input_names, example, strict=True)}
    diff = check_onnx(path, feeds, refs, atol, rtol)
    loaded = onnx.load(str(path))
    return {"file": path.name, "sha256": sha256_file(path), "opset": OPSET,
            "inputs": io_desc(loaded.graph.input), "outputs": io_desc(loaded.graph.output),
            "metadata": meta, "max_abs_diff_vs_torch": diff}


def write_manifest(folder: str | Path, models: dict[str, dict[str, Any]], **extra: Any) -> Path:
    """``folder/manifest.json`` = {"format_version", "models": {name: entry}, **extra}; returns its path."""
    path = Path(folder) / "manifest.json"
    atomic_write_json(path, {"format_version": "1", "models": models, **extra})
    return path
