"""Forward (motor -> code) and inverse (code -> motor) models of Schillaci et al. 2020.

Paper preset: Dense 32-320-320 as written in the paper's code, i.e. two tanh hidden layers of 320 units and
a linear output; Keras initialisation (Glorot-uniform weights, zero biases). Hidden sizes are configurable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

__all__ = ["MLPConfig", "MLP", "forward_model", "inverse_model"]


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """in_dim -> hidden (tanh) ... -> out_dim (linear). Shapes: input (N, in_dim), output (N, out_dim), float32."""

    in_dim: int
    out_dim: int
    hidden: tuple[int, ...] = (320, 320)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    def to_dict(self) -> dict[str, Any]:
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "hidden": list(self.hidden)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLPConfig:
        return cls(int(d["in_dim"]), int(d["out_dim"]), tuple(d["hidden"]))


class MLP(nn.Module):
    """A tanh MLP with a linear output. ``layers`` is the list of ``nn.Linear`` (first to last)."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dims = (cfg.in_dim, *cfg.hidden, cfg.out_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-uniform weights, zero biases (Keras defaults, as in the paper's code)."""
        for lin in self.layers:
            bound = (6.0 / (lin.in_features + lin.out_features)) ** 0.5
            with torch.no_grad():
                lin.weight.uniform_(-bound, bound, generator=generator)
                lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin in self.layers[:-1]:
            x = torch.tanh(lin(x))
        return self.layers[-1](x)


def forward_model(motor_dim: int = 2, code_dim: int = 32, hidden: tuple[int, ...] = (320, 320)) -> MLP:
    """Forward model: motor (N, motor_dim) in [0, 1] -> code (N, code_dim)."""
    return MLP(MLPConfig(motor_dim, code_dim, tuple(hidden)))


def inverse_model(motor_dim: int = 2, code_dim: int = 32, hidden: tuple[int, ...] = (320, 320)) -> MLP:
    """Inverse model: code (N, code_dim) -> motor (N, motor_dim), normalised (not clipped)."""
    return MLP(MLPConfig(code_dim, motor_dim, tuple(hidden)))
