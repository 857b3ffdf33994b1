"""Multi-scale inference for the few-shot segmenters (``--scales``; numpy only).

The guided network's logits have stride 8: at a 256-pixel input a chickweed leaflet, a carrot frond or an onion
leaf is a cell or two of the 32x32 logit map and is lost. Run at a larger input side the same frame gives those
thin parts more cells, at the price of broad leaves (their edges get no better, and the network, trained on
112-pixel crops, sees them larger than it ever did). Test-time multi-scale averages the two: the network runs at
each side ``round(imgsz * r)`` for ``r`` in ``scales``, with a guide computed from the support at that same side,
and the foreground probabilities, resized to the frame's size, are averaged before the colour prior and the CRF.
Cost: the network's time grows with the sum of the squared ratios (1 and 2: 5x; 5-6x per frame in bench/segment.py).
``vision.FewShotSegmenter`` and ``models.onnx_segmenter.OnnxSegmenter`` take ``scales``; ``microfarm segment``,
``deploy`` and ``eval-segmenter`` take ``--scales R`` (repeatable; default 1: the network at ``--imgsz`` alone).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_SCALES", "input_sides", "check_ratios"]

DEFAULT_SCALES: tuple[float, ...] = (1.0,)
MAX_SCALE = 8.0
MAX_SIDE = 4096


def input_sides(imgsz: int, scales: Sequence[float], error: type[Exception] = ValueError) -> tuple[int, ...]:
    """The network input sides ``round(imgsz * r)`` for each ratio ``r`` (repeats dropped, order kept).

    An empty ``scales`` means ``DEFAULT_SCALES``. Raises ``error`` with a one-line message for a ratio outside
    (0, 8] or a side outside 16..4096 pixels.
    """
    sides: list[int] = []
    for r in check_ratios(scales, error):
        side = int(round(imgsz * r))
        if not 16 <= side <= MAX_SIDE:
            raise error(f"--scales {r:g} gives a network input of {side} pixels (--imgsz {imgsz}); it must be in "
                        f"16..{MAX_SIDE}")
        if side not in sides:
            sides.append(side)
    return tuple(sides)


def check_ratios(scales: Sequence[float], error: type[Exception] = ValueError) -> list[float]:
    """The ratios as floats (``DEFAULT_SCALES`` if empty); ``error`` with one line for one outside (0, 8]."""
    ratios = [float(r) for r in scales] or list(DEFAULT_SCALES)
    for r in ratios:
        if not 0.0 < r <= MAX_SCALE:
            raise error(f"--scales {r:g} is not valid: give ratios of --imgsz in (0, {MAX_SCALE:g}], e.g. --scales 1 "
                        "--scales 2")
    return ratios
