"""`microfarm export`: every model (and the mean-field CRF) to one ONNX bundle, checked against torch.

The bundle itself is written by ``models.bundle_export.write_bundle``; this command gives it the frames it checks
the models on, rendered by the simulator (``SimFrameSource``: ``sim.sample_frames``). It sits on the robot side
because it needs ``sim`` and ``models`` both (docs/architecture.md): ``models`` may not import ``sim``. ``sim`` is
imported only when the frames are rendered, so that a base install without torch is told to install the ``train``
extra.

``export_bundle(cfg, log)`` is the command's work as a function (tests, benchmarks); ``ExportConfig``,
``write_demo_sources`` and ``DEFAULT_SEGMENTER`` are re-exported from ``models``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from microfarm_toolkit import UsageError, parse_config
from models.bundle_export import DEFAULT_SEGMENTER, ExportConfig, write_bundle
from models.export_sources import write_demo_sources

__all__ = ["ExportConfig", "export_bundle", "write_demo_sources", "cli", "DEFAULT_SEGMENTER", "SimFrameSource"]


class SimFrameSource:
    """The frames of ``sim.sample_frames`` as the export's ``models.export_checks.FrameSource``; ``sim`` is imported at
    the first frame (pybullet loads then)."""

    def features(self, arm: str, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from sim.sample_frames import render_features

        return render_features(arm, size, n, seed)

    def segmentation(self, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from sim.sample_frames import render_segmentation

        return render_segmentation(size, n, seed)


def export_bundle(cfg: ExportConfig, log: Any = print) -> Path:
    """Write the bundle described by ``cfg`` (its check frames rendered by the simulator); returns its folder."""
    return write_bundle(cfg, SimFrameSource(), log)


def cli(argv: list[str]) -> int:
    cfg = parse_config(ExportConfig, argv, prog="microfarm export")
    cfg.crf_params()  # bad --crf-* values exit 2 before anything is exported
    from models.onnx_export import OnnxExportError

    try:
        export_bundle(cfg)
    except OnnxExportError as e:
        raise UsageError(f"export check failed: {e}") from None
    return 0
