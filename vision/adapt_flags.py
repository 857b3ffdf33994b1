"""The command-line side of adaptation to the examples (``vision.adapt``), torch-free so that the ``segment``
command's ONNX path stays light: the ``AdaptFlags`` config mixin and ``support_classes``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from microfarm_toolkit import UsageError

__all__ = ["AdaptFlags", "AdaptPart", "ADAPT_PARTS", "support_classes"]

AdaptPart = Literal["head", "last"]
ADAPT_PARTS: tuple[str, ...] = ("head", "last")


@dataclasses.dataclass
class AdaptFlags:
    """Adaptation to the support shots before the feed starts (a config mixin)."""

    adapt: float = dataclasses.field(default=0.0, metadata={
        "help": "fine-tune the network on the support shots for this many seconds before the first frame "
                "(0: off; torch backend)"})
    adapt_steps: int = dataclasses.field(default=0, metadata={
        "help": "... or for this many steps (the first of --adapt / --adapt-steps reached stops it)"})
    adapt_part: AdaptPart = dataclasses.field(default="head", metadata={
        "help": "what adapts: head (fusion and head layers) or last (also the encoder's last blocks)"})
    save_adapted: Path | None = dataclasses.field(default=None, metadata={
        "help": "write the adapted weights here (.safetensors; `microfarm export --segmenter PATH` bundles them)"})

    @property
    def adapting(self) -> bool:
        return self.adapt > 0 or self.adapt_steps > 0

    def check_adapt(self) -> None:
        """UsageError (exit 2) for a negative or non-finite --adapt / --adapt-steps or a --save-adapted without them."""
        if not (math.isfinite(self.adapt) and self.adapt >= 0):
            raise UsageError(f"--adapt must be a number of seconds >= 0, got {self.adapt}")
        if self.adapt_steps < 0:
            raise UsageError(f"--adapt-steps must be >= 0, got {self.adapt_steps}")
        if self.save_adapted is not None and not self.adapting:
            raise UsageError("--save-adapted needs --adapt SECONDS or --adapt-steps N")
        if self.save_adapted is not None and Path(self.save_adapted).suffix != ".safetensors":
            raise UsageError(f"--save-adapted must end in .safetensors, got {str(self.save_adapted)!r}")


def support_classes(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_classes: int
                    ) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """A support's shots per class for ``adapt``: images (H,W,3) uint8 and masks (H,W), non-zero = the thing for
    one class, labels 1..K for ``n_classes`` K >= 2 -> per class the shots that show it and its (H,W) bool masks."""
    if n_classes <= 1:
        return [(list(images), [np.asarray(m) != 0 for m in masks])]
    out = []
    for k in range(1, n_classes + 1):
        pairs = [(im, np.asarray(m) == k) for im, m in zip(images, masks, strict=True) if (np.asarray(m) == k).any()]
        out.append(([p[0] for p in pairs], [p[1] for p in pairs]))
    return out
