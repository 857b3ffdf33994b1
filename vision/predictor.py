"""``FewShotSegmenter``: show it one to a few annotated examples once, then segment frame after frame.

Frames and support images are HWC uint8 RGB (H,W,3); gray (H,W) or (H,W,1), RGBA (H,W,4) and 16-bit images
are converted (``to_rgb8``). A mask is of its image's size: binary (any 8/16-bit image, gray or colour, where
non-zero = foreground), or, for several classes at once (crop and weed), label values 0..K or a colour-coded
mask with a ``classes`` legend (``models.labels``). The pipeline is ``models.pipeline.SegmentationPipeline``
(shared with the ONNX ``OnnxSegmenter``) over a ``vision.torch_backend.TorchBackend``: the network sees
``imgsz x imgsz`` RGB in [0,1] (it applies the ImageNet normalisation itself), or each side of ``scales`` with the
probabilities averaged (``models.scales``); probabilities are resized back to the frame's own size, blended with
the support's colour histogram (``colour_prior``, ``models.colour_prior``) and optionally refined by a CRF there;
with ``crf_gate`` (the default) the CRF runs only for supports where it does not lower the IoU on the support
images themselves (``models.crf_gate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from microfarm_toolkit import UsageError
from models.colour_prior import DEFAULT_COLOUR_PRIOR
from models.cue_fusion import DEFAULT_FUSION
from models.guided_net import GuidedNet, load_guided_net
from models.pipeline import SegmentationPipeline
from models.scales import DEFAULT_SCALES, input_sides
from vision.densecrf import CRFParams
from vision.imageio import SupportError, to_mask, to_rgb8
from vision.torch_backend import TorchBackend

__all__ = ["FewShotSegmenter", "SupportError", "to_rgb8", "to_mask"]

CRFName = Literal["none", "dense", "meanfield"]
CRFS: tuple[str, ...] = ("none", "dense", "meanfield")


class FewShotSegmenter(SegmentationPipeline):
    """Few-shot segmenter over a ``GuidedNet``.

    model: a ``GuidedNet`` or the path of a ``save_guided_net`` safetensors file. crf: "none", "dense"
    (pydensecrf) or "meanfield" (``models.crf.MeanFieldCRF``), both with K+1 labels for K classes. imgsz: the
    network's input side. scales: run the network at ``round(imgsz * r)`` for each ratio r and average its
    probabilities (``models.scales``; default 1). colour_prior: weight W of the support's colour histogram,
    foreground = (1-W) network + W colour before the CRF (0: the network alone). crf_gate: check once per support
    set whether the CRF lowers the IoU on the support images themselves and skip it if so (``models.crf_gate``;
    False: always run it). fusion: "blend" (the weight W) or "fit" (cue weights fitted on the support,
    ``models.cue_fusion``). The guide is computed once per support shot and class and kept as a running mean, and
    the colour histogram sums the shots' counts, so ``predict`` only runs the query branch (once per class).
    ``set_support(images, masks, classes=None)``, ``add_support``, ``predict``, ``fused``, ``refine``, ``crf_on``,
    ``gate``, ``shots``, ``sides``, ``classes``: ``models.pipeline.SegmentationPipeline``.
    """

    def __init__(self, model: GuidedNet | str | Path, crf: CRFName = "none", imgsz: int = 256,
                 device: str = "cpu", crf_params: CRFParams | None = None, threshold: float = 0.5,
                 colour_prior: float = DEFAULT_COLOUR_PRIOR, crf_gate: bool = True,
                 scales: Sequence[float] = DEFAULT_SCALES, fusion: str = DEFAULT_FUSION) -> None:
        if crf not in CRFS:
            raise UsageError(f"unknown crf {crf!r}; choose one of: {', '.join(CRFS)}")
        if imgsz < 16:
            raise UsageError(f"imgsz must be at least 16, got {imgsz}")
        if not 0.0 <= colour_prior <= 1.0:
            raise UsageError(f"colour_prior must be in [0, 1] (0 = the network alone), got {colour_prior}")
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"device {device!r} asked for but CUDA is not available; use --device cpu")
        self.device = torch.device(device)
        if isinstance(model, (str, Path)):
            model, _ = load_guided_net(model, self.device)
        self.crf_params = crf_params or CRFParams()
        backend = TorchBackend(model, self.device, crf, self.crf_params)
        self.model = backend.model
        super().__init__(backend, crf, int(imgsz), input_sides(int(imgsz), scales, UsageError), threshold,
                         colour_prior, crf_gate, SupportError, RuntimeError, fusion)

    def set_model(self, model: GuidedNet) -> None:
        """Swap the network (e.g. for one adapted to the support by ``vision.adapt``); the support is cleared, so
        call ``set_support`` again (its guides come from the network)."""
        self.backend.model = model  # the backend puts it on its device in eval mode
        self.model = self.backend.model
        self._reset(("foreground",), None)
