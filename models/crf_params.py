"""The parameters of the package's two CRFs (stdlib only): ``CRFParams`` and the command-line ``CRFFlags``.

Used by the dense CRF (``vision.densecrf``, pydensecrf) and the exportable mean-field CRF (``models.crf``).
Defaults are pydensecrf's example values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CRFParams", "CRFFlags", "crf_flag"]


def crf_flag(param: str) -> str:
    """The command-line flag of a ``CRFParams`` field (``window`` -> ``--crf-window``)."""
    return "--crf-" + {"bilateral": "meanfield"}.get(param, param).replace("_", "-")


@dataclass(frozen=True)
class CRFParams:
    """CRF parameters. ``bilateral``, ``window`` and ``blur`` concern the mean-field CRF only: its bilateral
    term on a bilateral grid ("grid", the default) or in a ConvCRF local window ("window") of ``window`` cells
    at 1/``blur`` resolution."""

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    iterations: int = 5
    window: int = 11
    blur: int = 8
    bilateral: str = "grid"

    def __post_init__(self) -> None:
        for f in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
            if not getattr(self, f) > 0:
                raise ValueError(f"CRFParams.{f} must be > 0, got {getattr(self, f)}")
        if self.iterations < 0:
            raise ValueError(f"CRFParams.iterations must be >= 0, got {self.iterations}")
        if self.window < 1 or self.window % 2 == 0 or self.blur < 1:
            raise ValueError(f"CRFParams.window must be odd and >= 1 and blur >= 1, got {self.window}, {self.blur}")
        if self.bilateral not in ("grid", "window"):
            raise ValueError(f"CRFParams.bilateral must be 'grid' or 'window', got {self.bilateral!r}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def meanfield(self) -> Any:
        """A ``models.crf.MeanFieldCRF`` with these parameters (imports torch)."""
        from models.crf import MeanFieldCRF

        return MeanFieldCRF(**self.as_dict())


def _flag(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
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
        from microfarm import UsageError

        try:
            return CRFParams(self.crf_gaussian_sxy, self.crf_gaussian_compat, self.crf_bilateral_sxy,
                             self.crf_bilateral_srgb, self.crf_bilateral_compat, self.crf_iterations,
                             self.crf_window, self.crf_blur, self.crf_meanfield)
        except ValueError as e:
            flag = crf_flag(str(e).split(".", 1)[1].split(" ", 1)[0])
            raise UsageError(f"bad CRF parameter ({flag}): {e}") from None
