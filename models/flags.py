"""The command-line flag mixins of the segmentation pipeline's settings (stdlib + numpy; no torch).

Each mixin is a dataclass of a few fields that ``microfarm_toolkit.parse_config`` turns into flags, with the check
that makes a bad value a one-line ``UsageError``. They sit in ``models`` because their users sit on both sides of
the layers (docs/architecture.md): ``microfarm segment`` / ``eval-segmenter`` / ``eval-real`` in ``vision``,
``microfarm deploy`` / ``export`` in ``robot``; ``models`` is the one package both may import, and the settings
they carry are those of ``models.pipeline``. A mixin used by one command only stays beside that command
(``vision.adapt_flags``).

- ``ColourPriorFlags``: ``--colour-prior W``, ``--fusion`` (segment, eval-segmenter, eval-real, deploy);
- ``CRFGateFlags``: ``--crf-gate / --no-crf-gate`` (segment, eval-segmenter, eval-real, deploy);
- ``ScaleFlags``: ``--scales R`` (segment, eval-segmenter, deploy);
- ``CRFFlags``: ``--crf-*``, the ``CRFParams`` of both CRFs (segment, eval-segmenter, eval-real, export);
- ``ClassFlags``: ``--classes NAME=R,G,B`` (segment, deploy).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from microfarm_toolkit import UsageError
from models.colour_prior import DEFAULT_COLOUR_PRIOR
from models.crf_params import CRFParams
from models.cue_fusion import DEFAULT_FUSION
from models.labels import ClassSpec, parse_classes
from models.scales import DEFAULT_SCALES, check_ratios, input_sides

__all__ = ["ColourPriorFlags", "CRFGateFlags", "ScaleFlags", "CRFFlags", "ClassFlags", "crf_flag"]


def _flag(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


def crf_flag(param: str) -> str:
    """The command-line flag of a ``CRFParams`` field (``window`` -> ``--crf-window``)."""
    return "--crf-" + {"bilateral": "meanfield"}.get(param, param).replace("_", "-")


@dataclasses.dataclass
class ColourPriorFlags:
    """``--colour-prior W``: a base of the configs of ``microfarm segment``, ``eval-segmenter`` and ``deploy``."""

    colour_prior: float = dataclasses.field(default=DEFAULT_COLOUR_PRIOR, metadata={
        "help": "weight W of the support's colour histogram in the foreground probability, "
                "(1-W) network + W colour (0: the network alone)"})

    fusion: Literal["blend", "fit"] = dataclasses.field(default=DEFAULT_FUSION, metadata={
        "help": "how network and colour are combined: blend (the weight --colour-prior) or fit (network, colour "
                "histogram and excess green weighted by a logistic regression fitted on the support's own pixels; "
                "the blend where that fit does not beat it on the support)"})

    def check_colour_prior(self) -> float:
        """The weight, or a one-line ``UsageError`` if it is outside [0, 1]."""
        w = float(self.colour_prior)
        if not 0.0 <= w <= 1.0:
            raise UsageError(f"--colour-prior must be in [0, 1] (0 = the network alone), got {self.colour_prior}")
        return w


@dataclasses.dataclass
class CRFGateFlags:
    """``--crf-gate / --no-crf-gate`` for the configs of ``microfarm segment``, ``eval-segmenter`` and ``deploy``."""

    crf_gate: bool = dataclasses.field(default=True, metadata={
        "help": "run the CRF only for supports where it does not lower the IoU on the support images themselves "
                "(checked once per support set; --no-crf-gate always runs it)"})


@dataclasses.dataclass
class ScaleFlags:
    """``--scales R`` for the configs of ``microfarm segment``, ``eval-segmenter`` and ``deploy``."""

    scales: list[float] = dataclasses.field(default_factory=list, metadata={
        "help": "run the network at --imgsz times each R and average the probabilities (repeatable: --scales 1 "
                "--scales 2 helps thin species such as chickweed, costs broad leaves ~1 point, ~5x the network's time; "
                "default: 1)"})

    def scale_list(self) -> list[float]:
        """The ratios as given, or ``DEFAULT_SCALES``."""
        return [float(r) for r in self.scales] or list(DEFAULT_SCALES)

    def check_scales(self, imgsz: int | None) -> list[float]:
        """The ratios, or a one-line ``UsageError`` for a bad one (and, given ``imgsz``, for a bad input side);
        called before any weights or bundle are loaded."""
        if imgsz:
            input_sides(imgsz, self.scales, UsageError)
        return check_ratios(self.scales, UsageError)


@dataclasses.dataclass
class CRFFlags:
    """The CRF parameters as command-line flags (``--crf-gaussian-sxy`` ...): a base of the configs of
    ``microfarm segment``, ``eval-segmenter`` and ``export``. Defaults: pydensecrf's example values."""

    crf_gaussian_sxy: float = _flag(3.0, "CRF smoothness kernel: spatial std in pixels")
    crf_gaussian_compat: float = _flag(3.0, "CRF smoothness kernel: weight")
    crf_bilateral_sxy: float = _flag(80.0, "CRF appearance kernel: spatial std in pixels")
    crf_bilateral_srgb: float = _flag(13.0, "CRF appearance kernel: colour std (0..255 units)")
    crf_bilateral_compat: float = _flag(10.0, "CRF appearance kernel: weight")
    crf_iterations: int = _flag(5, "CRF mean-field iterations")
    crf_meanfield: Literal["grid", "window"] = _flag(
        "grid", "mean-field CRF's appearance term: grid (bilateral grid) or window (ConvCRF)")
    crf_window: int = _flag(11, "mean-field CRF --crf-meanfield window: window side in cells (odd)")
    crf_blur: int = _flag(8, "mean-field CRF --crf-meanfield window: downsampling factor of the window")

    def crf_params(self) -> CRFParams:
        """These flags as ``CRFParams``; a one-line ``UsageError`` naming the bad value otherwise."""
        try:
            return CRFParams(self.crf_gaussian_sxy, self.crf_gaussian_compat, self.crf_bilateral_sxy,
                             self.crf_bilateral_srgb, self.crf_bilateral_compat, self.crf_iterations,
                             self.crf_window, self.crf_blur, self.crf_meanfield)
        except ValueError as e:
            flag = crf_flag(str(e).split(".", 1)[1].split(" ", 1)[0])
            raise UsageError(f"bad CRF parameter ({flag}): {e}") from None


@dataclasses.dataclass
class ClassFlags:
    """``--classes NAME=R,G,B`` for the configs of ``microfarm segment`` and ``deploy``."""

    classes: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "a class of a multi-class support mask, repeatable: NAME=R,G,B (its colour in a colour-coded mask, "
                "RGB) or NAME=V (its value in a gray/indexed mask); forces that reading of the masks (default: "
                "gray values 1..K are classes, one value/colour = binary)"})

    def class_legend(self) -> tuple[ClassSpec, ...] | None:
        """The legend, or None without --classes; a one-line ``UsageError`` for a malformed entry."""
        return parse_classes(self.classes, UsageError) if self.classes else None
