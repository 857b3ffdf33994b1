"""The parameters of the package's two CRFs (stdlib only): ``CRFParams`` (its flags: ``models.flags.CRFFlags``).

Used by the dense CRF (``vision.densecrf``, pydensecrf) and the exportable mean-field CRF (``models.crf``).
Defaults are pydensecrf's example values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["CRFParams"]


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
