"""Cue weights fitted on the support: how much to trust the network, the colour histogram and excess green.

numpy + OpenCV only (the torch and the ONNX pipelines share it through ``models.pipeline``).

The pipeline's default fusion is a fixed blend, (1 - W) network + W colour histogram. Which cue is right differs
between tasks and cameras: for "every plant" on a sunny field excess green is hard to beat, for "this crop, not
the weeds" the network is the only cue that can tell them apart, on a crop of a colour unlike the rest the
histogram wins. The support already says which: its masks are labelled pixels. ``--fusion fit`` fits, per class,
a logistic regression on the support's own pixels,

    P(class | pixel) = sigmoid(w_net logit(p_net) + w_col logit(p_col) + w_exg exg_rel + b),

with p_net the network's probability, p_col the colour histogram's and ``exg_rel`` the pixel's excess green
(2G - R - B, channels over 255) minus its frame's Otsu threshold, times 10 (so 0 is the frame's own plant/soil
boundary, whatever the light). On the support the network and the histogram would be too good (each has seen
the pixel it is asked about), so their support features are cross-fitted: each shot is seen through the guide
and the histogram counts of the *other* shots (leave one out). That needs two or more shots of the class; with
one, nothing is held out and the pipeline keeps the blend. (A single shot split into two checkerboards of
32-pixel squares, or into halves, each predicted from the other, was tried: the same plant and its colours are
on both sides, the fit trusted the histogram far too much, and on the simulator's held-out fold it lost to the
blend, see docs/segmentation.md.) The fit is L2-regularised (``lam``) Newton on at most ``max_pixels`` pixels
drawn with a fixed seed (deterministic).

The logistic's own boundary (probability 0.5) is where the likelihood is best, not the IoU: for a class that
covers a few per cent of the frame (a weed among crop) it marks too little. The decision threshold is therefore
moved to the one of ``SHIFTS`` (logit units) with the best IoU on the support's cross-fitted pixels (ties to the
smallest move), folded into the bias, so that 0.5 stays the decision everywhere downstream (one scalar chosen on
up to ``max_pixels`` pixels: little optimism). The fitted weights are kept only if they do not lower the IoU on
the support against the blend on the same cross-fitted features (as the CRF gate): a support of a few hundred
pixels of a small weed can make a fit worse than the blend.

With one shot of a class nothing can be fitted, but excess green can still be checked: ExG + Otsu has no
parameter taken from the shot (its threshold is the frame's own), so its IoU on the shot is an honest estimate
of what it does on other frames. Where it is at least the network's own IoU on the shot (the network with the
shot's guide, which has seen the mask: an optimistic figure) and at least 0.5 (``EXG_GATE_MIN_IOU``: a red
crop on green grass or an untrained network must not turn it on), the mask shows "the green things" and the class
probability is the mean of the blend and sigmoid(exg_rel) (``gate_one_shot``); else the blend. On Peanut's
vegetation and crop this lifts 1-shot IoU above excess green's, and on CWF-788 (a crop among weeds) it never
fires; on the simulator, where a support of one species can look like "the green things" and the query holds
other species, it costs some IoU (docs/segmentation.md).

Excess green as the support reads it (``models.exg_cue``): both uses above take, instead of exg_rel itself, the
excess-green cue chosen on the support's masks (``choose_cue``: how many pixels outside the green the labeller
draws, and, with two or more shots, whether the class is all the green, its thin plants or its broad ones), so
the one-shot check compares that cue's IoU with the network's, and the fit gets its map as a fifth feature beside
exg_rel.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from models.colour_prior import ColourHistogram, blend
from models.exg_cue import ExgCue, choose_cue

__all__ = ["FUSIONS", "DEFAULT_FUSION", "excess_green_rgb", "otsu_levels", "exg_relative", "cue_features",
           "fit_logistic", "crossfit_colour", "CueWeights"]

FUSIONS = ("blend", "fit")
DEFAULT_FUSION = "fit"
EXG_GATE_MIN_IOU = 0.5  # one shot: the least IoU of ExG + Otsu on the shot for excess green to join the blend
# logit moves of the fit's decision threshold tried on the support, smallest first
SHIFTS = tuple(sorted((round(float(v), 2) for v in np.linspace(-2, 2, 21)), key=abs))
_EPS = 1e-4
_EXG_ROW = np.array([[-1.0, 2.0, -1.0]], np.float32) / np.float32(255.0)  # 2G - R - B over 255, RGB order


def excess_green_rgb(rgb: np.ndarray) -> np.ndarray:
    """Excess green 2G - R - B of (H,W,3) uint8 RGB on the channels over 255 -> (H,W) float32 in [-2, 2] (one
    ``cv2.transform`` pass: ~5x faster than numpy's per-channel arithmetic on a 1080p frame)."""
    return cv2.transform(np.asarray(rgb, np.float32), _EXG_ROW).reshape(rgb.shape[:2])


def otsu_levels(values: np.ndarray) -> tuple[np.ndarray, float, float, float] | None:
    """Otsu's threshold of a (H,W) float map: (the map scaled to uint8 levels 0..255, its min, its max, the level
    t; a pixel is above the threshold where its level > t), or None for a map of (almost) one value."""
    if values.ndim == 2 and values.dtype in (np.float32, np.float64):
        lo, hi = (float(v) for v in cv2.minMaxLoc(values)[:2])  # one pass for both
    else:
        lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-3:
        return None
    levels = values - lo  # then in place: round((values - lo) / (hi - lo) * 255), the same float operations
    levels /= hi - lo
    levels *= 255
    u8 = np.rint(levels, out=levels).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return u8, lo, hi, float(t)


def exg_relative(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (H,W) float32: 10 x (excess green 2G - R - B on channels over 255 minus the frame's
    Otsu threshold of it); > 0 where ExG + Otsu calls the pixel a plant. A frame of one ExG value: ExG - max."""
    e = excess_green_rgb(rgb)
    levels = otsu_levels(e)
    e -= float(e.max()) if levels is None else levels[1] + (levels[3] + 0.5) / 255.0 * (levels[2] - levels[1])
    e *= 10  # in place (e is this call's own map): the same float32 operations as (e - threshold) * 10
    return e


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function of z, clipped to [-30, 30] (no overflow in exp). A (H,W) float32 map in place of a
    copy with OpenCV's exp (~3x faster on a 1080p frame, within 2e-7 of numpy's)."""
    if z.dtype != np.float32 or z.ndim != 2:
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
    e = np.clip(z, -30, 30)
    np.negative(e, out=e)
    cv2.exp(e, dst=e)
    e += np.float32(1)
    return np.divide(np.float32(1), e, out=e)


def _logit(p: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """log(p / (1 - p)) of probabilities clipped to [_EPS, 1 - _EPS], in ``dtype``. A (H,W) float32 map in place
    of one copy with OpenCV's log (~2.5x faster on a 1080p frame, within 1e-6 of numpy's)."""
    q = np.clip(np.asarray(p, dtype), _EPS, 1 - _EPS)
    if q.dtype != np.float32 or q.ndim != 2:
        return np.log(q / (1 - q))
    np.divide(q, np.float32(1) - q, out=q)
    return cv2.log(q, dst=q)


def _columns(net_fg: np.ndarray, colour_fg: np.ndarray, exg: np.ndarray, cue: ExgCue,
             dtype: type) -> list[np.ndarray]:
    """The features but the bias, each (H,W) of ``dtype``, in the weights' order: [logit net, logit colour,
    exg_rel, the excess-green cue's map]."""
    return [_logit(net_fg, dtype), _logit(colour_fg, dtype), exg.astype(dtype, copy=False),
            cue.map(exg).astype(dtype, copy=False)]


def cue_features(net_fg: np.ndarray, colour_fg: np.ndarray, rgb: np.ndarray, exg: np.ndarray | None = None,
                 cue: ExgCue | None = None) -> np.ndarray:
    """Per-pixel features (H*W, 5) float64 [logit net, logit colour, exg_rel, the excess-green cue's map, 1] of
    (H,W) probabilities in [0,1] and their frame (H,W,3) uint8 RGB; exg: the frame's ``exg_relative`` where
    already computed; cue: the support's ``models.exg_cue.ExgCue`` (default: exg_rel itself)."""
    e = exg_relative(rgb) if exg is None else exg
    cols = _columns(net_fg, colour_fg, e, cue or ExgCue(), np.float64)
    return np.stack([c.ravel() for c in cols] + [np.ones(net_fg.size)], 1)


def fit_logistic(x: np.ndarray, y: np.ndarray, lam: float = 0.01, iters: int = 25) -> np.ndarray:
    """Weights (D,) float64 of an L2-regularised logistic regression (penalty lam |w|^2 / 2 per sample) of labels
    y (N,) in {0,1} on features x (N,D), by Newton's method from 0."""
    w = np.zeros(x.shape[1])
    reg = lam * np.eye(x.shape[1])
    for _ in range(iters):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) / len(y) + lam * w
        hess = (x * (p * (1 - p))[:, None]).T @ x / len(y) + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


def crossfit_colour(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per shot (H_k,W_k) float32 colour probability of every pixel from the histogram of the other shots (leave
    one out: all shots' counts minus its own; the prior floor where the others hold no foreground). ValueError for
    fewer than two shots."""
    if len(images) < 2:
        raise ValueError(f"cross-fitting needs two or more shots, got {len(images)}")
    shots = [ColourHistogram().add(img, m) for img, m in zip(images, masks, strict=True)]
    fg, bg = sum(h.fg_counts for h in shots), sum(h.bg_counts for h in shots)
    out = []
    for img, own in zip(images, shots, strict=True):
        others = ColourHistogram()
        others.fg_counts, others.bg_counts, others.shots = fg - own.fg_counts, bg - own.bg_counts, len(shots) - 1
        out.append(others.prob(img) if others.fg_counts.any()
                   else np.full(img.shape[:2], others.prior_floor, np.float32))
    return out


def _iou(pred: np.ndarray, truth: np.ndarray) -> float:
    u = int(np.count_nonzero(pred | truth))
    return int(np.count_nonzero(pred & truth)) / u if u else 1.0


class CueWeights:
    """One class's fitted cue weights, or None (the blend) where the fit did not beat it on the support or was
    not tried (one shot of the class: then ``gate_one_shot`` may add excess green to the blend).

    ``fit(net_fgs, colour_fgs, images, masks, colour_prior)``: per shot (H,W) float32 cross-fitted network and
    colour probabilities, (H,W,3) uint8 RGB, (H,W) bool mask; ``apply(net_fg, colour_fg, rgb)`` -> (H,W) float32.
    """

    def __init__(self, lam: float = 0.01, max_pixels: int = 20000, seed: int = 0) -> None:
        self.lam, self.max_pixels, self.seed = float(lam), int(max_pixels), int(seed)
        self.weights: np.ndarray | None = None
        self.support_iou: tuple[float, float] = (float("nan"), float("nan"))  # (fit, blend)
        self.exg_gate = False  # one shot: the blend averaged with excess green (``gate_one_shot``)
        self.gate_iou: tuple[float, float] = (float("nan"), float("nan"))  # one shot: (excess green, network)
        self.exg_cue = ExgCue()  # the excess-green cue chosen on the support (``models.exg_cue.choose_cue``)
        self.shift = 0.0  # logit units the fit's threshold was moved by (folded into its bias: ``SHIFTS``)

    def gate_one_shot(self, net_fg: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> CueWeights:
        """One shot of the class: (H,W) float32 network probability of the shot with its own guide, its (H,W,3)
        uint8 RGB and (H,W) bool mask. Turns excess green (the cue chosen on the shot) on where its IoU on the shot
        is at least the network's and at least ``EXG_GATE_MIN_IOU`` (see the module doc)."""
        m = np.asarray(mask, bool)
        self.weights = None
        self.exg_cue, exg_iou = choose_cue([exg_relative(rgb)], [m], widths=False)  # one shot: the halo alone
        self.gate_iou = (exg_iou, _iou(np.asarray(net_fg) >= 0.5, m))
        self.exg_gate = bool(self.gate_iou[0] >= max(self.gate_iou[1], EXG_GATE_MIN_IOU))
        return self

    def fit(self, net_fgs: Sequence[np.ndarray], colour_fgs: Sequence[np.ndarray], images: Sequence[np.ndarray],
            masks: Sequence[np.ndarray], colour_prior: float) -> CueWeights:
        exgs = [exg_relative(i) for i in images]
        self.exg_cue = choose_cue(exgs, masks)[0]
        x = np.concatenate([cue_features(n, c, i, e, self.exg_cue)
                            for n, c, i, e in zip(net_fgs, colour_fgs, images, exgs, strict=True)])
        y = np.concatenate([np.asarray(m, bool).ravel() for m in masks])
        b = np.concatenate([blend(n, c, colour_prior).ravel() for n, c in zip(net_fgs, colour_fgs, strict=True)])
        if len(y) > self.max_pixels:
            idx = np.random.default_rng(self.seed).choice(len(y), self.max_pixels, replace=False)
            x, y, b = x[idx], y[idx], b[idx]
        self.weights, self.shift = None, 0.0
        if y.all() or not y.any():
            return self
        w = fit_logistic(x, y.astype(np.float64), self.lam)
        z = x @ w
        ious = [_iou(z >= t, y) for t in SHIFTS]
        best = int(np.argmax(ious))  # the first best: the smallest move
        self.shift = float(SHIFTS[best])
        w[-1] -= self.shift  # the bias column: sigmoid(x @ w) >= 0.5 where z >= shift
        self.support_iou = (ious[best], _iou(b >= 0.5, y))
        if self.support_iou[0] >= self.support_iou[1]:
            self.weights = w
        return self

    @property
    def uses_exg(self) -> bool:
        """Whether ``apply`` reads the frame's excess green (fitted weights or the one-shot excess-green gate)."""
        return self.weights is not None or self.exg_gate

    def apply(self, net_fg: np.ndarray, colour_fg: np.ndarray, rgb: np.ndarray, colour_prior: float,
              exg: np.ndarray | None = None) -> np.ndarray:
        """(H,W) float32 class probability: the fitted logistic, or the blend without fitted weights. Threshold
        0.5 of the logistic is the fit's decision boundary. exg: ``exg_relative(rgb)`` where the caller has it
        (one per frame for all K classes)."""
        if self.weights is None and not self.exg_gate:
            return blend(net_fg, colour_fg, colour_prior)
        e = exg_relative(rgb) if exg is None else exg
        if self.weights is None:  # one shot, excess green on: the mean of the blend and sigmoid(the cue)
            p = blend(net_fg, colour_fg, colour_prior)
            p += _sigmoid(self.exg_cue.map(e))
            p *= np.float32(0.5)
            return p
        w = self.weights.astype(np.float32)  # ``cue_features``' columns summed in float32 per pixel (no stacking)
        cols = _columns(net_fg, colour_fg, e, self.exg_cue, np.float32)
        z = cols[0]  # the net's logit map, this call's own array
        z *= w[0]
        for wi, col in zip(w[1:-1], cols[1:], strict=True):
            z += wi * col
        z += w[-1]
        return _sigmoid(z).astype(np.float32, copy=False)
