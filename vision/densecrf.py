"""Fully connected CRF (Krähenbühl & Koltun 2011) through ``pydensecrf`` (the ``pydensecrf2`` fork).

``CRFParams`` holds the parameters shared by both CRFs of the package: this dense one and the ONNX-exportable
mean-field CRF ``models.crf.MeanFieldCRF`` (build it with ``params.meanfield()``). Defaults are pydensecrf's
example values. This module imports numpy and pydensecrf only (torch lazily, in ``meanfield``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CRFParams", "dense_crf"]


@dataclass(frozen=True)
class CRFParams:
    """CRF parameters. ``window`` and ``blur`` concern the mean-field CRF's local approximation only."""

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    iterations: int = 5
    window: int = 11
    blur: int = 8

    def __post_init__(self) -> None:
        for f in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if not getattr(self, f) > 0:
                raise ValueError(f"CRFParams.{f} must be > 0, got {getattr(self, f)}")
        if self.iterations < 0:
            raise ValueError(f"CRFParams.iterations must be >= 0, got {self.iterations}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def meanfield(self) -> Any:
        """A ``models.crf.MeanFieldCRF`` with these parameters (imports torch)."""
        from models.crf import MeanFieldCRF

        return MeanFieldCRF(**self.as_dict())


def dense_crf(probs: np.ndarray, image: np.ndarray, params: CRFParams | None = None,
              clip: float = 1e-8) -> np.ndarray:
    """Refine class probabilities with pydensecrf's dense CRF.

    probs: (L, H, W) float, each pixel's L probabilities (summing to 1); image: (H, W, 3) uint8 RGB.
    Returns (L, H, W) float32 refined probabilities. Unary = -log(clip(probs)).
    """
    import pydensecrf.densecrf as dcrf

    p = params or CRFParams()
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(f"probs must be (L>=2, H, W), got shape {probs.shape}")
    n_labels, h, w = probs.shape
    image = np.asarray(image)
    if image.shape != (h, w, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be ({h}, {w}, 3) uint8 to match probs, got {image.shape} {image.dtype}")
    unary = -np.log(np.clip(probs.astype(np.float32), clip, 1.0)).reshape(n_labels, h * w)
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
    d.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=np.ascontiguousarray(image),
                           compat=p.bilateral_compat)
    q = np.asarray(d.inference(p.iterations), dtype=np.float32)
    return q.reshape(n_labels, h, w)
