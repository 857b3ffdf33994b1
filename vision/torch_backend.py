"""``TorchBackend``: a ``GuidedNet`` and the torch/pydensecrf CRFs behind ``models.pipeline.SegmentBackend``.

numpy in, numpy out (float32, batch 1): ``guide(image [1,3,s,s] RGB 0..1, mask [1,1,s,s] 0..1) -> [1,G]``,
``segment(query [1,3,s,s], guide [1,G]) -> [1,2,s,s]`` softmax probabilities (channel 1 = foreground),
``crf(probs [1,L,H,W], image [1,3,H,W] RGB 0..255) -> [1,L,H,W]`` with crf "meanfield" (``models.crf.MeanFieldCRF``,
on the device) or "dense" (pydensecrf, ``vision.densecrf``), both for any L; None with crf "none".
"""

from __future__ import annotations

import numpy as np
import torch

from models.guided_net import GuidedNet
from vision.densecrf import CRFParams, dense_crf

__all__ = ["TorchBackend", "ANY_LABELS"]

ANY_LABELS = 1 << 16  # ``crf_max_labels`` of a CRF that takes any number of labels


class TorchBackend:
    """model: a ``GuidedNet`` (put in eval mode on ``device``); crf: "none", "dense" or "meanfield"."""

    def __init__(self, model: GuidedNet, device: torch.device | str = "cpu", crf: str = "none",
                 crf_params: CRFParams | None = None) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.crf_name, self.crf_params = crf, crf_params or CRFParams()
        self._meanfield = self.crf_params.meanfield().to(self.device).eval() if crf == "meanfield" else None
        self.crf_max_labels = ANY_LABELS if crf in ("dense", "meanfield") else 0

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)

    def guide(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """image [1,3,s,s] float32 RGB 0..1, mask [1,1,s,s] float32 0..1 -> this shot's guide [1,G] float32."""
        with torch.inference_mode():
            return self.model.shot_guides(self._t(image), self._t(mask)).cpu().numpy()

    def segment(self, query: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """query [1,3,s,s] float32 RGB 0..1, guide [1,G] -> softmax probabilities [1,2,s,s] float32."""
        with torch.inference_mode():
            return torch.softmax(self.model.segment(self._t(query), self._t(guide)), 1).cpu().numpy()

    def crf(self, probs: np.ndarray, image: np.ndarray) -> np.ndarray | None:
        """probs [1,L,H,W] float32 (sum 1 over L), image [1,3,H,W] float32 RGB 0..255 -> refined [1,L,H,W]."""
        if self.crf_name == "meanfield":
            assert self._meanfield is not None
            with torch.inference_mode():
                return self._meanfield(self._t(probs), self._t(image)).cpu().numpy()
        if self.crf_name == "dense":
            rgb = np.ascontiguousarray(image[0].transpose(1, 2, 0).astype(np.uint8))
            return dense_crf(probs[0], rgb, self.crf_params)[None]
        return None
