"""Fully connected CRF (Krähenbühl & Koltun 2011) through ``pydensecrf`` (the ``pydensecrf2`` fork).

``CRFParams`` holds the parameters shared by both CRFs of the package: this dense one and the ONNX-exportable
mean-field CRF ``models.crf.MeanFieldCRF`` (build it with ``params.meanfield()``). Defaults are pydensecrf's
example values. This module imports numpy and pydensecrf only (torch lazily, in ``meanfield``).
"""

from __future__ import annotations

import numpy as np

from models.crf_params import CRFParams

__all__ = ["CRFParams", "dense_crf"]


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
