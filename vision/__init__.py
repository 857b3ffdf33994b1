"""Few-shot segmentation: episodes, training, prediction, CRF refinement, camera sources, CLI.

``vision.FewShotSegmenter`` is imported lazily (it pulls in torch) so that ``import vision`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FewShotSegmenter"]


def __getattr__(name: str) -> Any:
    if name == "FewShotSegmenter":
        from vision.predictor import FewShotSegmenter

        return FewShotSegmenter
    raise AttributeError(f"module 'vision' has no attribute {name!r}")
