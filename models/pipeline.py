"""The one few-shot segmentation pipeline, over a small backend protocol (numpy + OpenCV only, no torch).

``SegmentationPipeline`` holds what the torch ``vision.FewShotSegmenter`` and the ONNX
``models.onnx_segmenter.OnnxSegmenter`` share: the support (a guide per class and input side, a running mean over
the shots that show the class), the colour prior (one ``models.colour_prior.ColourHistogram`` per class, that class
against everything else), the input sides of ``models.scales``, the CRF gate (``models.crf_gate``), the multi-class
decision (``models.labels``) and ``predict``. The two segmenters are thin subclasses that build a backend:

- ``guide(image [1,3,s,s] float32 RGB 0..1, mask [1,1,s,s] float32 0..1) -> [1,G] float32``: one shot's guide;
- ``segment(query [1,3,s,s] float32 RGB 0..1, guide [1,G]) -> [1,2,s,s] float32`` softmax **probabilities**
  (channel 1 = foreground; each backend applies its own softmax, so its figures are those it always gave);
- ``crf(probs [1,L,H,W] float32 summing to 1 over L, image [1,3,H,W] float32 RGB 0..255) -> [1,L,H,W] float32``
  refined probabilities, or None when the backend has no CRF;
- ``crf_max_labels: int``: the most labels L its CRF takes (0: no CRF; an ONNX ``crf.onnx`` takes 2).

Frames and support images are converted to (H,W,3) uint8 RGB; the network sees each side s of ``sides`` (cv2
INTER_AREA when shrinking, INTER_LINEAR otherwise); probabilities come back at the frame's size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import cv2
import numpy as np

from models.colour_prior import ColourHistogram, blend
from models.crf_gate import CRFGate
from models.cue_fusion import FUSIONS, CueWeights, crossfit_colour, exg_relative
from models.imageio import support_shot, to_rgb8
from models.labels import ClassSpec, Key, as_legend, class_distribution, decide, interpret_masks

__all__ = ["SegmentBackend", "SegmentationPipeline", "crf_refine", "network_input"]

Classes = Sequence[ClassSpec | str] | Mapping[str, Key] | None


class SegmentBackend(Protocol):
    """What the pipeline needs from a network runtime (module docstring)."""

    crf_max_labels: int

    def guide(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray: ...

    def segment(self, query: np.ndarray, guide: np.ndarray) -> np.ndarray: ...

    def crf(self, probs: np.ndarray, image: np.ndarray) -> np.ndarray | None: ...


def network_input(rgb: np.ndarray, s: int) -> np.ndarray:
    """(H,W,3) uint8 RGB -> [1,3,s,s] float32 in [0,1] (INTER_AREA when shrinking, INTER_LINEAR otherwise)."""
    interp = cv2.INTER_AREA if min(rgb.shape[:2]) > s else cv2.INTER_LINEAR
    x = cv2.resize(rgb, (s, s), interpolation=interp)
    return x.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0)


def crf_refine(backend: SegmentBackend, probs: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """The backend's CRF on foreground probs (H,W) or class probs (K,H,W) float32 and its frame (H,W,3) uint8 RGB
    -> the same shape, refined (unchanged where the backend has no CRF for K+1 labels). The CRF sees the
    (K+1)-label distribution [1 - sum_k probs_k, probs_1..K] ([1 - fg, fg] for one class)."""
    cls = probs[None] if probs.ndim == 2 else probs
    if backend.crf_max_labels < cls.shape[0] + 1:
        return probs
    dist = np.concatenate([np.float32(1.0) - cls.sum(0, keepdims=True), cls]).astype(np.float32)
    out = backend.crf(dist[None], rgb.transpose(2, 0, 1)[None].astype(np.float32))
    if out is None:
        return probs
    return out[0, 1] if probs.ndim == 2 else out[0, 1:]


class SegmentationPipeline:
    """``set_support(images, masks)`` once, ``predict(frame)`` per frame, over a ``SegmentBackend``.

    backend: the network (and CRF); crf: the CRF's name ("none": never run it); imgsz: the first input side;
    sides: every input side (``models.scales.input_sides``), probabilities averaged; threshold: foreground at
    probability >= threshold; colour_prior: weight W, class probability = (1-W) network + W colour histogram;
    crf_gate: the CRF gate on (``models.crf_gate``); error: raised for a bad support shot or frame;
    state_error: raised when predicting before any support; fusion: "blend" (the weight W above) or "fit" (cue
    weights fitted on the support, ``models.cue_fusion``; the blend stays where the fit does not beat it there;
    W = 0 is the network alone with either).
    """

    def __init__(self, backend: SegmentBackend, crf: str, imgsz: int, sides: tuple[int, ...], threshold: float,
                 colour_prior: float, crf_gate: bool, error: type[Exception] = ValueError,
                 state_error: type[Exception] = RuntimeError, fusion: str = "blend") -> None:
        self.backend, self.crf, self.imgsz, self.sides = backend, crf, int(imgsz), tuple(sides)
        self.threshold, self.colour_prior = float(threshold), float(colour_prior)
        if fusion not in FUSIONS:
            raise error(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.fusion = fusion
        self.gate = CRFGate(crf_gate)
        self._error, self._state_error = error, state_error
        self._reset(("foreground",), None)

    def _reset(self, names: tuple[str, ...], legend: tuple[ClassSpec, ...] | None) -> None:
        self.classes, self._legend = names, legend
        self._sums: dict[tuple[int, int], np.ndarray] = {}  # (class 1..K, side) -> sum of the shots' guides
        self._counts = dict.fromkeys(range(1, len(names) + 1), 0)  # class -> shots that show it
        self._colour = [ColourHistogram() for _ in names]
        self._shots = 0
        self._kept: list[tuple[np.ndarray, np.ndarray, dict[tuple[int, int], np.ndarray]]] = []  # rgb, mask, guides
        self._cues: list[CueWeights] | None = None  # fitted on the first fused() after a change (fusion "fit")
        self.gate.reset()

    @property
    def shots(self) -> int:
        """Number of support shots in the current guide."""
        return self._shots

    @property
    def multiclass(self) -> bool:
        """Whether the support holds two or more classes (``predict`` then returns labels 0..K)."""
        return len(self.classes) > 1

    def set_support(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], classes: Classes = None) -> None:
        """Replace the support set: images (H_k,W_k,3) uint8 RGB and their masks (H_k,W_k): binary (non-zero = the
        thing), label values 0..K, or colour-coded with ``classes`` (a legend: ``models.labels``)."""
        if len(images) != len(masks) or not images:
            raise self._error(f"need as many masks as images, at least one (got {len(images)} images, "
                              f"{len(masks)} masks)")
        legend = as_legend(classes, self._error)
        labels = interpret_masks(masks, legend, self._error)
        shots = [self._shot(img, m, not labels.binary) for img, m in zip(images, labels.masks, strict=True)]
        self._reset(labels.names, legend or tuple(ClassSpec(n, i + 1) for i, n in enumerate(labels.names)))
        for rgb, m in shots:
            self._add(rgb, m)

    def add_support(self, image: np.ndarray, mask: np.ndarray) -> None:
        """Add one shot (image (H,W,3) uint8 RGB, its mask) to the support; the old shots are kept. A mask of a
        multi-class support is read with its classes; of a one-class support, non-zero = the thing."""
        if not self._shots:
            return self.set_support([image], [mask], self._legend if self.multiclass else None)
        if self.multiclass:
            mask = interpret_masks([mask], self._legend, self._error, complete=False).masks[0]
        self._add(*self._shot(image, mask, self.multiclass))

    def _shot(self, image: np.ndarray, mask: np.ndarray, labelled: bool) -> tuple[np.ndarray, np.ndarray]:
        """A checked shot: (rgb (H,W,3) uint8, mask (H,W) bool, or with ``labelled`` uint8 labels 0..K)."""
        rgb, fg = support_shot(image, mask, self._error)
        return rgb, (np.asarray(mask, np.uint8) if labelled else fg)

    def _add(self, rgb: np.ndarray, mask: np.ndarray) -> None:
        ks = [k for k in range(1, len(self.classes) + 1) if (mask == k).any()] if self.multiclass else [1]
        xs = {s: network_input(rgb, s) for s in self.sides}
        guides = {}  # every class's and side's guide first, so that a failure leaves the support as it was
        for k in ks:
            m = (mask == k) if self.multiclass else mask
            for s in self.sides:
                mt = cv2.resize(m.astype(np.float32), (s, s), interpolation=cv2.INTER_AREA)[None, None]
                guides[k, s] = np.asarray(self.backend.guide(xs[s], mt), np.float32)
        for key, g in guides.items():
            self._sums[key] = g + self._sums[key] if key in self._sums else g
        for k in ks:
            self._counts[k] += 1
        for k, hist in enumerate(self._colour, 1):
            hist.add(rgb, mask == k if self.multiclass else mask)
        self.gate.add(rgb, mask, labelled=self.multiclass)
        if self.fusion == "fit":
            self._kept.append((np.array(rgb, np.uint8), np.array(mask), guides))
        self._cues = None
        self._shots += 1

    def guide_value(self, side: int | None = None, cls: int = 1) -> np.ndarray:
        """The support's guide [1,G] float32 of class ``cls`` (1..K) at input side ``side`` (default: the first):
        the mean over the shots that show the class."""
        if not self._shots:
            raise self._state_error("no support shots yet: call set_support first")
        if side is not None and side not in self.sides:
            raise self._state_error(f"no guide at input side {side}; this segmenter runs at {list(self.sides)}")
        if cls not in self._counts:
            raise self._state_error(f"no class {cls}; the support has classes 1..{len(self.classes)}")
        return (self._sums[cls, side or self.sides[0]] / self._counts[cls]).astype(np.float32)

    def fused(self, rgb: np.ndarray) -> np.ndarray:
        """(H,W,3) uint8 RGB -> probabilities before the CRF: (H,W) float32 foreground for a one-class support,
        else (K,H,W) float32 class probabilities (``models.labels.class_distribution``). Each class: the network
        with its guide, resized to the frame's size and averaged over the input sides, blended with its colour
        prior, clipped to [0,1]."""
        xs = {s: network_input(rgb, s) for s in self.sides}
        cues = self._fit_cues() if self.fusion == "fit" and self.colour_prior > 0 else None
        exg = exg_relative(rgb) if cues is not None and any(c.uses_exg for c in cues) else None  # once per frame
        codes: dict[tuple[int, ...], np.ndarray] = {}  # the frame's colour bins, once per binning
        out = []
        for k, hist in enumerate(self._colour, 1):
            fg = self._network_fg(rgb, xs, {s: self.guide_value(s, k) for s in self.sides})
            if self.colour_prior > 0:
                if hist.bins not in codes:
                    codes[hist.bins] = hist.codes(rgb)
                colour = hist.prob(rgb, codes[hist.bins])
                fg = (cues[k - 1].apply(fg, colour, rgb, self.colour_prior, exg) if cues is not None
                      else blend(fg, colour, self.colour_prior))
            out.append(np.clip(fg, 0.0, 1.0, out=fg))  # fg: this frame's own float32 map
        return out[0] if len(out) == 1 else class_distribution(np.stack(out))

    def _network_fg(self, rgb: np.ndarray, xs: dict[int, np.ndarray], guides: dict[int, np.ndarray]) -> np.ndarray:
        """(H,W) float32 network foreground of frame rgb (its inputs xs per side) with a guide per side, resized
        to the frame's size and averaged over the sides."""
        h, w = rgb.shape[:2]
        fg = np.zeros((h, w), np.float32)
        for s in self.sides:
            p = self.backend.segment(xs[s], guides[s])
            fg += cv2.resize(p[0, 1], (w, h), interpolation=cv2.INTER_LINEAR)
        return fg / np.float32(len(self.sides))

    def fusion_report(self) -> dict[str, object]:
        """What ``fused`` does, for summary.json: {"mode", "colour_prior", "classes": per class (fusion "fit",
        after the first frame) {"weights": {net, colour, exg, exg_cue, bias} or None (the blend kept), "exg_cue"
        ({halo, side, width}: the excess-green cue chosen on the support, ``models.exg_cue``, radii in pixels at
        its ``REFERENCE_SIDE``; "used": whether the class's probability reads it, i.e. fitted weights or the
        one-shot excess-green gate on), "threshold_shift" (logit units the fit's decision threshold was moved by to
        its best IoU on the support; None without fitted weights), "support_iou_fit",
        "support_iou_blend" (None where no fit was tried: a class shown by one shot), "one_shot_exg" (one shot:
        excess green averaged in), "support_iou_exg", "support_iou_net" (its check; None with two or more shots)}}."""
        rep: dict[str, object] = {"mode": self.fusion, "colour_prior": self.colour_prior}

        def num(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 4)

        if self.fusion == "fit" and self._cues is not None:
            rep["classes"] = {name: {"weights": None if c.weights is None else dict(zip(
                ("net", "colour", "exg", "exg_cue", "bias"), (round(float(v), 4) for v in c.weights), strict=True)),
                "threshold_shift": c.shift if c.weights is not None else None,
                "support_iou_fit": num(c.support_iou[0]), "support_iou_blend": num(c.support_iou[1]),
                "exg_cue": {**c.exg_cue.report(), "used": c.uses_exg}, "one_shot_exg": c.exg_gate,
                "support_iou_exg": num(c.gate_iou[0]), "support_iou_net": num(c.gate_iou[1])}
                for name, c in zip(self.classes, self._cues, strict=True)}
        return rep

    def _fit_cues(self) -> list[CueWeights]:
        """Per class the cue weights fitted on the kept shots (``models.cue_fusion``), each shot's network and
        colour features from the other shots (leave one out; the shot's own guide where no other shows the class);
        a class shown by a single shot keeps the blend (nothing held out), averaged with excess green where ExG +
        Otsu explains the shot at least as well as the network does (``CueWeights.gate_one_shot``)."""
        if self._cues is not None:
            return self._cues
        if not self._kept:
            raise self._state_error("no support shots yet: call set_support first")
        cues = []
        rgbs = [rgb for rgb, _, _ in self._kept]
        xs = [{s: network_input(rgb, s) for s in self.sides} for rgb in rgbs]  # the shots' network inputs
        for k in range(1, len(self.classes) + 1):
            masks = [(m == k) if self.multiclass else (m != 0) for _, m, _ in self._kept]
            has = [j for j, (_, _, g) in enumerate(self._kept) if (k, self.sides[0]) in g]
            if len(has) < 2:  # nothing to hold out: the blend, with excess green where it explains the shot
                cue = CueWeights()
                if has:
                    j = has[0]
                    own = {s: self._kept[j][2][k, s] for s in self.sides}
                    cue.gate_one_shot(self._network_fg(rgbs[j], xs[j], own), rgbs[j], masks[j])
                cues.append(cue)
                continue
            nets = []
            for j, rgb in enumerate(rgbs):
                others = [i for i in has if i != j] or [j]
                guides = {s: np.mean([self._kept[i][2][k, s] for i in others], 0).astype(np.float32)
                          for s in self.sides}
                nets.append(self._network_fg(rgb, xs[j], guides))
            cues.append(CueWeights().fit(nets, crossfit_colour(rgbs, masks), rgbs, masks, self.colour_prior))
        self._cues = cues
        return cues

    def refine(self, probs: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """The CRF of ``self.crf`` on ``fused``'s probabilities and their frame (H,W,3) uint8 RGB -> the same shape
        (``crf_refine``: K+1 labels)."""
        return probs if self.crf == "none" else crf_refine(self.backend, probs, rgb)

    @property
    def crf_supported(self) -> bool:
        """Whether the backend's CRF takes this support's K+1 labels."""
        return self.backend.crf_max_labels >= len(self.classes) + 1

    @property
    def crf_on(self) -> bool:
        """Whether ``predict`` runs the CRF for the current support (runs the gate's check if not yet done)."""
        return self.crf != "none" and self.crf_supported and self.gate.use_crf(self.fused, self.refine,
                                                                                self.threshold)

    def predict(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frame (H,W,3) uint8 RGB (or gray/RGBA/16-bit) -> (probs, mask) at the frame's own size.

        One class: probs (H,W) float32 foreground probability in [0,1], mask (H,W) uint8 0/255. K classes: probs
        (K,H,W) float32 class probabilities (background = 1 - their sum), mask (H,W) uint8 labels 0..K
        (``models.labels.decide``). Colour prior and CRF as set (and as the gate allows).
        """
        rgb = to_rgb8(frame, self._error)
        probs = self.fused(rgb)
        if self.crf_on:
            probs = self.refine(probs, rgb)
        probs = np.asarray(probs, np.float32)  # fused's and the CRF's own arrays: clipped in place
        np.clip(probs, 0.0, 1.0, out=probs)
        if probs.ndim == 2:  # 255 where probs >= threshold (OpenCV: ~20x faster than np.where on a 1080p frame)
            return probs, cv2.compare(probs, float(np.float32(self.threshold)), cv2.CMP_GE)
        return probs, decide(probs, self.threshold)
