"""Multi-class supports: the label format of a support mask, the ``--classes`` legend and the per-pixel decision.

numpy + OpenCV only (the torch-free robot runtime reads supports through it).

**Mask format.** A support mask is read as one of:

- *binary* (the old format): any non-zero pixel = the one thing to segment. A mask set is binary when its
  pixels hold one non-zero value (or colour) only, e.g. 0/255 or 0/1, or when a gray mask holds values above
  ``MAX_CLASSES`` (0/128/255, antialiased edges, a JPEG mask): any non-zero = foreground, as before.
- *indexed*: a gray (or indexed/palette PNG, ``models.support_io.read_mask``) mask whose non-zero values are 2 or
  more of 1..K (K <= ``MAX_CLASSES``): 0 = background, k = class k; they must run 1..K without gaps over the set.
- *colour-coded*, with a legend (``--classes NAME=R,G,B``, RGB as an image viewer shows it; black = background):
  every non-black pixel must have one of the legend's colours. ``--classes NAME=V`` names a label value V of a
  gray/indexed mask instead. A legend forces its interpretation; without one, a colour mask with 2 to
  ``MAX_CLASSES`` distinct colours is refused (it needs a legend), one with more is binary (antialiased/JPEG).

The interpretation is made over the whole support set. Every class needs pixels in at least one support mask.
A support of one class (binary, or a one-entry legend) behaves exactly as before (masks 0/255).

**Decision.** Each class k has its own foreground probability p_k (its own guide and colour prior). They become
one (K+1)-label distribution: background 1 - max_k p_k, class k max_k p_k * p_k / sum_j p_j
(``class_distribution``); a pixel is background where the classes' total (= max_k p_k) is below the threshold,
else the most probable class (``decide``); the CRF takes that distribution with K+1 labels.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["MAX_CLASSES", "PALETTE", "ClassSpec", "SupportLabels", "parse_classes", "as_legend",
           "interpret_masks", "class_distribution", "decide", "legend_text",
           "class_fractions"]

MAX_CLASSES = 16
PALETTE: tuple[tuple[int, int, int], ...] = (  # overlay colour of class k: PALETTE[(k - 1) % 16], RGB
    (255, 40, 200), (40, 200, 255), (255, 200, 40), (120, 255, 60), (255, 90, 40), (150, 100, 255),
    (40, 255, 190), (255, 255, 255), (200, 120, 60), (0, 120, 255), (255, 0, 90), (180, 255, 180),
    (120, 60, 200), (255, 160, 160), (0, 160, 120), (160, 160, 0))
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,39}$")
_SYNTAX = ("give NAME=R,G,B (a colour of the mask in RGB, 0..255 each) or NAME=V (a label value of a gray mask), "
           "e.g. --classes crop=0,255,0 --classes weed=255,0,0")

Key = int | tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class ClassSpec:
    """One legend entry: a class name and the mask key it is painted with (a label value or an RGB colour)."""

    name: str
    key: Key


@dataclasses.dataclass
class SupportLabels:
    """A support set read as labels: ``masks`` (H,W) uint8 0..K per shot, the class ``names`` (K of them)."""

    masks: list[np.ndarray]
    names: tuple[str, ...]

    @property
    def binary(self) -> bool:
        """One class: the old binary format (masks written 0/255)."""
        return len(self.names) == 1


def legend_text(legend: Sequence[ClassSpec]) -> str:
    """'crop=0,255,0, weed=255,0,0' for messages."""
    return ", ".join(f"{c.name}={c.key if isinstance(c.key, int) else ','.join(map(str, c.key))}" for c in legend)


def parse_classes(values: Sequence[str], error: type[Exception] = ValueError) -> tuple[ClassSpec, ...]:
    """``NAME=R,G,B`` / ``NAME=V`` strings -> legend; ``error`` with one line for a malformed or repeated entry."""
    out: list[ClassSpec] = []
    for v in values:
        name, eq, rest = str(v).partition("=")
        parts = rest.split(",")
        if not eq or not _NAME.match(name.strip()) or len(parts) not in (1, 3) \
                or not all(p.strip().isdigit() for p in parts):
            raise error(f"--classes {v!r} is not valid: {_SYNTAX}")
        nums = [int(p) for p in parts]
        if len(nums) == 3 and (max(nums) > 255 or not any(nums)):
            raise error(f"--classes {v!r}: colours are R,G,B in 0..255 and not black (black is the background)")
        if len(nums) == 1 and not 1 <= nums[0] <= 65535:
            raise error(f"--classes {v!r}: a label value is 1..65535 (0 is the background)")
        out.append(ClassSpec(name.strip(), nums[0] if len(nums) == 1 else (nums[0], nums[1], nums[2])))
    names, keys = [c.name for c in out], [_canon(c.key) for c in out]
    for what, seq in (("name", names), ("colour/value", keys)):
        dup = next((x for i, x in enumerate(seq) if x in seq[:i]), None)
        if dup is not None:
            raise error(f"--classes: the {what} {dup if isinstance(dup, str) else _key_text(dup)} is given twice; "
                        "give each class once, with its own colour or value")
    if len(out) > MAX_CLASSES:
        raise error(f"--classes: {len(out)} classes given, at most {MAX_CLASSES} are supported")
    return tuple(out)


def as_legend(classes: Sequence[ClassSpec | str] | Mapping[str, Key] | None,
              error: type[Exception] = ValueError) -> tuple[ClassSpec, ...] | None:
    """A legend from ``ClassSpec``s, ``NAME=...`` strings, a {name: value or (R,G,B)} mapping, or plain names
    (the i-th name = label value i+1); None stays None."""
    if classes is None:
        return None
    if isinstance(classes, Mapping):
        classes = [f"{k}={v if isinstance(v, int) else ','.join(map(str, v))}" for k, v in classes.items()]
    legend = [c if isinstance(c, ClassSpec) else
              parse_classes([str(c) if "=" in str(c) else f"{c}={i + 1}"], error)[0] for i, c in enumerate(classes)]
    legend = list(parse_classes([f"{c.name}={_key_arg(_canon(c.key))}" for c in legend], error))  # repeats checked
    if not legend:
        raise error("classes: give at least one class (or None for a binary / indexed mask)")
    return tuple(legend)


def _canon(key: Key) -> int:
    """A key as one int: a gray value v -> v (also (v,v,v) for v <= 255); a colour -> 2**16 + packed RGB."""
    if isinstance(key, tuple):
        r, g, b = key
        return r if r == g == b else (1 << 16) + (r << 16 | g << 8 | b)
    return int(key)


def _key_text(k: int) -> str:
    if k < (1 << 16):
        return f"value {k}"
    c = k - (1 << 16)
    return f"colour {c >> 16},{c >> 8 & 255},{c & 255}"


def _keys(mask: np.ndarray, error: type[Exception]) -> np.ndarray:
    """A mask image -> (H,W) int64 canonical keys (0 = background): gray values as they are, colours packed."""
    m = np.asarray(mask)
    if m.dtype == bool or np.issubdtype(m.dtype, np.floating):
        m = (m != 0).astype(np.uint8) if m.ndim == 2 else (m != 0).any(axis=2).astype(np.uint8)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.ndim == 3 and m.shape[2] in (3, 4):
        c = m[..., :3]
        if c.dtype != np.uint8:
            c = ((c.astype(np.uint32) + 128) // 257).astype(np.uint8) if c.dtype == np.uint16 else (c != 0) * 255
        c = c.astype(np.int64)
        gray = (c[..., 0] == c[..., 1]) & (c[..., 1] == c[..., 2])
        packed = (1 << 16) + (c[..., 0] << 16 | c[..., 1] << 8 | c[..., 2])
        return np.where(gray, c[..., 0], packed)
    if m.ndim == 3:
        return (m != 0).any(axis=2).astype(np.int64)
    if m.ndim != 2:
        raise error(f"expected a mask (H,W) or (H,W,C), got shape {np.asarray(mask).shape}")
    return m.astype(np.int64)


def interpret_masks(masks: Sequence[np.ndarray], classes: Sequence[ClassSpec | str] | Mapping[str, Key] | None = None,
                    error: type[Exception] = ValueError, names: Sequence[str] | None = None,
                    complete: bool = True) -> SupportLabels:
    """Read a support set's masks (module docstring) -> ``SupportLabels``; ``error`` with one line naming the
    problem and the fix. ``classes``: a legend (``as_legend``) or None (binary or indexed, by their values);
    ``names``: how messages name each mask (default 'support mask i'); ``complete``: every class of the legend
    must have pixels in these masks (False: a shot added to a support that has them)."""
    legend = as_legend(classes, error)
    keys = [_keys(m, error) for m in masks]
    label = [str(n) for n in names] if names is not None else [f"support mask {i + 1}" for i in range(len(masks))]
    present = np.unique(np.concatenate([k.ravel() for k in keys])) if keys else np.zeros(0, np.int64)
    present = [int(k) for k in present if k != 0]
    if legend is None:
        gray = all(k < (1 << 16) for k in present)
        if len(present) <= 1 or (gray and max(present) > MAX_CLASSES) or (not gray and len(present) > MAX_CLASSES):
            return SupportLabels([(k != 0).astype(np.uint8) for k in keys], ("foreground",))
        if not gray:
            raise error(f"the support masks hold {len(present)} colours ({', '.join(_key_text(k) for k in present[:4])}"
                        f"{', ...' if len(present) > 4 else ''}): a colour-coded mask of several classes needs a "
                        "legend, --classes NAME=R,G,B for each colour (black = background); for one thing, paint it "
                        "in one colour")
        legend = tuple(ClassSpec(f"class{v}", v) for v in range(1, max(present) + 1))
    lookup = {_canon(c.key): i + 1 for i, c in enumerate(legend)}
    out = []
    for k, name in zip(keys, label, strict=True):
        vals, inverse = np.unique(k, return_inverse=True)
        bad = [int(v) for v in vals if v != 0 and int(v) not in lookup]
        if bad:
            n = int(np.count_nonzero(k == bad[0]))
            raise error(f"{name} has {_key_text(bad[0])} on {n} pixels, which the classes legend "
                        f"({legend_text(legend)}) lacks: add --classes NAME={_key_arg(bad[0])} or repaint those pixels "
                        "(black/0 = background)")
        table = np.array([0 if v == 0 else lookup[int(v)] for v in vals], np.uint8)
        out.append(table[inverse.reshape(k.shape)])
    seen = set(np.unique(np.concatenate([m.ravel() for m in out])).tolist()) if out else set()
    missing = [c for i, c in enumerate(legend) if i + 1 not in seen] if complete else []
    if missing:
        c = missing[0]
        raise error(f"class {c.name!r} ({_key_text(_canon(c.key))}) has no pixel in any support mask: every class "
                    "needs at least one example; mark it in a support mask, or drop it from the classes (labels "
                    "must run 1..K without gaps)")
    return SupportLabels(out, tuple(c.name for c in legend))


def _key_arg(k: int) -> str:
    if k < (1 << 16):
        return str(k)
    c = k - (1 << 16)
    return f"{c >> 16},{c >> 8 & 255},{c & 255}"


def class_distribution(p: np.ndarray) -> np.ndarray:
    """Per-class foreground probabilities p (K,H,W) float32 -> the classes' share of the (K+1)-label distribution
    (K,H,W) float32: class k gets max_j p_j * p_k / sum_j p_j, so they sum to max_j p_j (background = the rest)."""
    total = p.sum(0, keepdims=True)
    scale = np.divide(p.max(0, keepdims=True), total, out=np.zeros_like(total), where=total > 0)
    return (p * scale).astype(np.float32)


def decide(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class probabilities (K,H,W) (``class_distribution``, or refined by a CRF) -> (H,W) uint8 labels: 0 where the
    classes' total is below ``threshold``, else 1 + the most probable class."""
    labels = (probs.argmax(0) + 1).astype(np.uint8)
    labels[probs.sum(0) < threshold] = 0
    return labels


def class_fractions(labels: np.ndarray, names: tuple[str, ...] | list[str]) -> dict[str, float]:
    """(H,W) uint8 labels 0..K -> {class name: fraction of the frame with that label}, 5 decimals."""
    counts = np.bincount(labels.ravel(), minlength=len(names) + 1)
    return {n: round(float(counts[k + 1] / labels.size), 5) for k, n in enumerate(names)}
