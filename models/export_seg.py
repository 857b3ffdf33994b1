"""Export wrappers for the segmentation side of a bundle (guide, segment, CRF) and the shared bundle step.

- ``GuideExport``: ``images [K,3,H,W]`` float32 RGB 0..1 + ``masks [K,1,H,W]`` float32 0..1 -> ``guide [1,G]``
  (the mean over the K shots; K, H, W dynamic).
- ``SegmentExport``: ``query [N,3,H,W]`` float32 RGB 0..1 + ``guide [1,G]`` -> ``logits [N,2,H,W]`` at the
  input size (channel 1 = foreground; N, H, W dynamic).
- ``CRFExport`` is ``models.crf.MeanFieldCRF`` itself: ``probs [N,2,H,W]`` + ``image [N,3,H,W]`` float32 0..255
  -> ``refined [N,2,H,W]`` (N, H, W dynamic).

``export_model`` generalises ``models.onnx_export.export_onnx`` to any named dynamic axes and to parity checks
on several input sets (random *and* real): opset 18, one file, ``onnx.checker`` full check, ONNX Runtime vs
torch within atol 1e-4 / rtol 1e-3 on every set, then the contract (names, shapes, dtypes, preprocessing,
versions, training config) stamped into ``metadata_props`` under ``microfarm.contract``. It returns the
manifest entry.
"""

from __future__ import annotations

import io
import json
import platform
import warnings
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from microfarm_toolkit import atomic_path
from models.guided_net import GuidedNet
from models.onnx_export import OPSET, check_onnx, io_desc, save_checked, sha256_file
from models.runtime import BUNDLE_FORMAT, CONTRACT_KEY

__all__ = ["GuideExport", "SegmentExport", "export_model", "versions", "BUNDLE_FORMAT", "CONTRACT_KEY",
           "stamp_metadata"]

MICROFARM_VERSION = "0.1.0"


class GuideExport(nn.Module):
    def __init__(self, net: GuidedNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: Tensor, masks: Tensor) -> Tensor:
        return self.net.guide(images, masks)


class SegmentExport(nn.Module):
    def __init__(self, net: GuidedNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, query: Tensor, guide: Tensor) -> Tensor:
        return self.net.segment(query, guide)


def versions() -> dict[str, Any]:
    """Versions the bundle was made with (the runtime checks ``bundle_format`` and ``opset``)."""
    import onnx
    import onnxruntime

    return {"bundle_format": BUNDLE_FORMAT, "microfarm": MICROFARM_VERSION, "opset": OPSET,
            "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}


def stamp_metadata(path: Path, props: dict[str, Any]) -> None:
    """Replace ``path``'s metadata_props by ``props`` (non-strings as JSON) and save it again (atomically)."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v if isinstance(v, str) else json.dumps(v, sort_keys=True))
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))


def export_model(module: nn.Module, example: Sequence[Tensor], path: str | Path, input_names: Sequence[str],
                 output_names: Sequence[str], dynamic_axes: dict[str, dict[int, str]],
                 checks: Sequence[Sequence[Tensor]] = (), contract: dict[str, Any] | None = None,
                 atol: float = 1e-4, rtol: float = 1e-3) -> dict[str, Any]:
    """Export ``module(*example)`` to ``path`` and check it; returns the manifest entry.

    dynamic_axes: {tensor name: {axis: axis name}} (the example's size on a dynamic axis must be >= 2).
    checks: more input sets (e.g. real frames, other sizes) compared with torch besides ``example``.
    contract: extra fields (preprocess, config, ...) of the model's contract, written to the manifest entry and
    to ``metadata_props[CONTRACT_KEY]`` together with the inputs/outputs and versions.
    """

    path = Path(path)
    module = module.eval()
    example = tuple(t.detach().cpu() for t in example)
    dynamic_axes = {k: v for k, v in dynamic_axes.items() if k in (*input_names, *output_names)}
    for name, t in zip(input_names, example, strict=True):
        for axis in dynamic_axes.get(name, {}):
            if t.shape[axis] < 2:
                raise ValueError(f"{name}: dynamic axis {axis} needs an example size >= 2, got {t.shape[axis]}")
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module, example, input_names=list(input_names), output_names=list(output_names),
                                 dynamic_axes=dynamic_axes or None, dynamo=True, opset_version=OPSET,
                                 external_data=False, verbose=False)
    model = prog.model_proto
    inputs, outputs = io_desc(model.graph.input), io_desc(model.graph.output)
    entry: dict[str, Any] = {"file": path.name, "opset": OPSET, "inputs": inputs, "outputs": outputs,
                             **(contract or {}), "versions": versions()}
    del model.metadata_props[:]
    model.metadata_props.add(key=CONTRACT_KEY, value=json.dumps(entry, sort_keys=True))
    model.metadata_props.add(key="version", value=BUNDLE_FORMAT)
    save_checked(model, path)
    worst = 0.0
    for inputs_set in (example, *checks):
        ts = tuple(t.detach().cpu() for t in inputs_set)
        with torch.no_grad():
            ref = module(*ts)
        refs = [r.numpy() for r in (ref if isinstance(ref, tuple | list) else (ref,))]
        feeds = {n: t.numpy() for n, t in zip(input_names, ts, strict=True)}
        worst = max(worst, check_onnx(path, feeds, refs, atol, rtol))
    entry.update({"sha256": sha256_file(path), "max_abs_diff_vs_torch": worst, "parity_sets": 1 + len(checks),
                  "size_bytes": path.stat().st_size})
    return entry


def as_tensor(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
