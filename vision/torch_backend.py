"""``TorchBackend``: a ``GuidedNet`` and the torch/pydensecrf CRFs behind ``models.pipeline.SegmentBackend``.

numpy in, numpy out (float32, batch 1): ``guide(image [1,3,s,s] RGB 0..1, mask [1,1,s,s] 0..1) -> [1,G]``,
``segment(query [1,3,s,s], guide [1,G]) -> [1,2,s,s]`` softmax probabilities (channel 1 = foreground),
``crf(probs [1,L,H,W], image [1,3,H,W] RGB 0..255) -> [1,L,H,W]`` with crf "meanfield" (``models.crf.MeanFieldCRF``,
on the device) or "dense" (pydensecrf, ``vision.densecrf``), both for any L; None with crf "none".

With ``fast`` (the default) ``guide`` and ``segment`` run an inference copy of the model (``models.fold_bn``:
batch norm folded into the convolutions, channels-last memory), made on first use and made again whenever one
of the model's parameters or buffers changes in place (an optimiser step, ``load_state_dict``: their version
counters, read per call from a list kept since ``model`` was set, ~20 us) or ``model`` is set again (do so after
replacing a submodule or parameter object); the outputs equal the eager model's to float rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from models.fold_bn import inference_copy
from models.guided_net import GuidedNet
from vision.densecrf import CRFParams, dense_crf

__all__ = ["TorchBackend", "ANY_LABELS"]

ANY_LABELS = 1 << 16  # ``crf_max_labels`` of a CRF that takes any number of labels


class TorchBackend:
    """model: a ``GuidedNet`` (put in eval mode on ``device``); crf: "none", "dense" or "meanfield"; fast: run
    the network as an inference copy (module docstring), False: the model itself, eagerly."""

    def __init__(self, model: GuidedNet, device: torch.device | str = "cpu", crf: str = "none",
                 crf_params: CRFParams | None = None, fast: bool = True) -> None:
        self.device = torch.device(device)
        self.fast = fast
        self._copy: tuple[tuple[int, ...], GuidedNet] | None = None
        self.model = model
        self.crf_name, self.crf_params = crf, crf_params or CRFParams()
        self._meanfield = self.crf_params.meanfield().to(self.device).eval() if crf == "meanfield" else None
        self.crf_max_labels = ANY_LABELS if crf in ("dense", "meanfield") else 0

    @property
    def model(self) -> GuidedNet:
        """The network (eval mode, on ``device``); setting it drops the inference copy."""
        return self._model

    @model.setter
    def model(self, model: GuidedNet) -> None:
        self._model = model.to(self.device).eval()
        self._tensors = [*self._model.parameters(), *self._model.buffers()]  # whose versions ``_net`` compares
        self._copy = None

    def _net(self) -> GuidedNet:
        """The network to run: the model itself, or its inference copy (made again if the weights changed)."""
        if not self.fast:
            return self._model
        version = tuple(t._version for t in self._tensors)
        if self._copy is None or self._copy[0] != version:
            self._copy = (version, inference_copy(self._model))
        return self._copy[1]

    def _t(self, a: np.ndarray, nhwc: bool = False) -> torch.Tensor:
        """float32 tensor on the device; ``nhwc``: a 4-D array in channels-last memory (the inference copy's)."""
        t = torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(self.device)
        return t.contiguous(memory_format=torch.channels_last) if nhwc and t.dim() == 4 else t

    def guide(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """image [1,3,s,s] float32 RGB 0..1, mask [1,1,s,s] float32 0..1 -> this shot's guide [1,G] float32."""
        net = self._net()
        with torch.inference_mode():
            return net.shot_guides(self._t(image, self.fast), self._t(mask, self.fast)).cpu().numpy()

    def segment(self, query: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """query [1,3,s,s] float32 RGB 0..1, guide [1,G] -> softmax probabilities [1,2,s,s] float32."""
        net = self._net()
        with torch.inference_mode():
            logits = net.segment(self._t(query, self.fast), self._t(guide))
            return torch.softmax(logits, 1).contiguous().cpu().numpy()

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
