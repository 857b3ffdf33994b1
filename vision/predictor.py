"""``FewShotSegmenter``: show it one to a few annotated examples once, then segment frame after frame.

Frames and support images are HWC uint8 RGB (H,W,3); gray (H,W) or (H,W,1), RGBA (H,W,4) and 16-bit images
are converted (``to_rgb8``). A mask is any 8/16-bit image, gray or colour, where non-zero = foreground, of
its image's size. The network sees ``imgsz x imgsz`` RGB in [0,1] (it applies the ImageNet normalisation
itself), or each side of ``scales`` with the probabilities averaged (``models.scales``); probabilities are
resized back to the frame's own size, blended with the support's colour histogram
(``colour_prior``, ``models.colour_prior``) and optionally refined by a CRF there; with ``crf_gate`` (the
default) the CRF runs only for supports where it does not lower the IoU on the support images themselves
(``models.crf_gate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from microfarm import UsageError
from models.colour_prior import DEFAULT_COLOUR_PRIOR, ColourHistogram, blend
from models.crf_gate import CRFGate
from models.guided_net import GuideAccumulator, GuidedNet, load_guided_net
from models.imageio import support_shot
from models.scales import DEFAULT_SCALES, input_sides
from vision.densecrf import CRFParams, dense_crf
from vision.imageio import SupportError, to_mask, to_rgb8

__all__ = ["FewShotSegmenter", "SupportError", "to_rgb8", "to_mask"]

CRFName = Literal["none", "dense", "meanfield"]
CRFS: tuple[str, ...] = ("none", "dense", "meanfield")


class FewShotSegmenter:
    """Few-shot segmenter over a ``GuidedNet``.

    model: a ``GuidedNet`` or the path of a ``save_guided_net`` safetensors file. crf: "none", "dense"
    (pydensecrf) or "meanfield" (``models.crf.MeanFieldCRF``). imgsz: the network's input side. scales: run the
    network at ``round(imgsz * r)`` for each ratio r and average its probabilities (``models.scales``; default 1).
    colour_prior: weight W of the support's colour histogram, foreground = (1-W) network + W colour before the
    CRF (0: the network alone). crf_gate: check once per support set whether the CRF lowers the IoU on the
    support images themselves and skip it if so (``models.crf_gate``; False: always run it). The guide is
    computed once per support shot and kept as a running mean, and
    the colour histogram sums the shots' counts, so ``predict`` only runs the query branch.
    """

    def __init__(self, model: GuidedNet | str | Path, crf: CRFName = "none", imgsz: int = 256,
                 device: str = "cpu", crf_params: CRFParams | None = None, threshold: float = 0.5,
                 colour_prior: float = DEFAULT_COLOUR_PRIOR, crf_gate: bool = True,
                 scales: Sequence[float] = DEFAULT_SCALES) -> None:
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
        self.model = model.to(self.device).eval()
        self.crf, self.imgsz, self.threshold = crf, int(imgsz), float(threshold)
        self.sides = input_sides(self.imgsz, scales, UsageError)
        self.crf_params = crf_params or CRFParams()
        self._meanfield = self.crf_params.meanfield().to(self.device).eval() if crf == "meanfield" else None
        self.colour_prior = float(colour_prior)
        self._guides = {s: GuideAccumulator() for s in self.sides}
        self._colour = ColourHistogram()
        self.gate = CRFGate(crf_gate)

    @property
    def shots(self) -> int:
        """Number of support shots in the current guide."""
        return self._guides[self.sides[0]].count

    def _tensor(self, rgb: np.ndarray, s: int) -> torch.Tensor:
        """(H,W,3) uint8 -> [1,3,s,s] float32 in [0,1] on the device."""
        interp = cv2.INTER_AREA if min(rgb.shape[:2]) > s else cv2.INTER_LINEAR
        x = cv2.resize(rgb, (s, s), interpolation=interp)
        return torch.from_numpy(x).to(self.device).permute(2, 0, 1)[None].float().div_(255.0)

    def set_support(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
        """Replace the support set: K images (H_k,W_k,3) uint8 RGB and K masks (H_k,W_k), non-zero = fg."""
        if len(images) != len(masks) or not images:
            raise SupportError(f"need as many masks as images, at least one (got {len(images)} images, "
                               f"{len(masks)} masks)")
        self._guides = {s: GuideAccumulator() for s in self.sides}
        self._colour.reset()
        self.gate.reset()
        for img, m in zip(images, masks, strict=True):
            self.add_support(img, m)

    def add_support(self, image: np.ndarray, mask: np.ndarray) -> None:
        """Add one shot (image (H,W,3) uint8 RGB, mask (H,W) non-zero = fg) to the guide; old shots are kept."""
        rgb, m = support_shot(image, mask, SupportError)
        guides = {}  # every side's guide first, so that a failure leaves the support as it was
        for s in self.sides:
            mt = cv2.resize(m.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA)
            with torch.inference_mode():
                mask_t = torch.from_numpy(mt).to(self.device)[None, None]
                guides[s] = self.model.shot_guides(self._tensor(rgb, s), mask_t)
        for s, g in guides.items():
            self._guides[s].add(g)
        self._colour.add(rgb, m)
        self.gate.add(rgb, m)

    def fused(self, rgb: np.ndarray) -> np.ndarray:
        """(H,W,3) uint8 RGB -> (H,W) float32 foreground probability before the CRF: the network's, resized to
        the frame's size (the mean over the input sides of ``scales``), blended with the colour prior."""
        h, w = rgb.shape[:2]
        fg = np.zeros((h, w), np.float32)
        for s, acc in self._guides.items():
            with torch.inference_mode():
                p = torch.softmax(self.model.segment(self._tensor(rgb, s), acc.value()), 1)
            fg += cv2.resize(p[0, 1].cpu().numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
        fg /= np.float32(len(self._guides))
        if self.colour_prior > 0:
            fg = blend(fg, self._colour.prob(rgb), self.colour_prior)
        return np.clip(fg, 0.0, 1.0)

    def refine(self, fg: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """The CRF of ``self.crf`` on fg (H,W) float32 and its frame (H,W,3) uint8 RGB -> (H,W) float32."""
        if self.crf == "meanfield":
            assert self._meanfield is not None
            with torch.inference_mode():
                pt = torch.from_numpy(np.stack([1.0 - fg, fg]))[None].to(self.device)
                img = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None].float()
                return self._meanfield(pt, img)[0, 1].cpu().numpy()
        if self.crf == "dense":
            return dense_crf(np.stack([1.0 - fg, fg]), rgb, self.crf_params)[1]
        return fg

    @property
    def crf_on(self) -> bool:
        """Whether ``predict`` runs the CRF for the current support (runs the gate's check if not yet done)."""
        return self.crf != "none" and self.gate.use_crf(self.fused, self.refine, self.threshold)

    def predict(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frame (H,W,3) uint8 RGB (or gray/RGBA/16-bit) -> (probs (H,W) float32 in [0,1], mask (H,W) uint8 0/255).

        ``probs`` is the foreground probability at the frame's own size, blended with the colour prior and
        refined by the CRF as set (and as the gate allows).
        """
        rgb = to_rgb8(frame)
        fg = self.fused(rgb)
        if self.crf_on:
            fg = self.refine(fg, rgb)
        fg = np.clip(fg, 0.0, 1.0).astype(np.float32)
        return fg, np.where(fg >= self.threshold, 255, 0).astype(np.uint8)
