"""Interest (intrinsic motivation) per goal, and goal selection.

``LearningProgress`` (the paper): after pursuing goal g with prediction error PE_t (the distance between
the goal code and the forward model's prediction for the command), all interests decay by ``decay`` (0.9),
then LP_g = tanh(gain * |PE_t - PE_prev(g)|) (gain 2; 0 on the goal's first visit), and every value below
``floor`` (0.01) becomes 0.
``SlopeInterest`` (the follow-up, prediction_error_dynamics): |slope| of a least-squares line through the
last ``window`` PEs of the goal (per visit), same decay and floor for the other goals.
``RandomInterest``: all zeros; selection is uniform.

Selection (``select``): "greedy" takes the argmax with probability ``greedy_prob`` (0.85; ties broken at
random) else a uniformly random goal; "softmax" samples goal g with probability proportional to
exp(interest_g / temperature).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Interest", "LearningProgress", "SlopeInterest", "RandomInterest", "make_interest"]


class Interest:
    """Base: ``values`` (n_goals,) float64 >= 0; ``update(goal, pe)``; ``select(rng)``; state dicts."""

    def __init__(self, n_goals: int, selection: str = "greedy", greedy_prob: float = 0.85,
                 temperature: float = 0.1, decay: float = 0.9, floor: float = 0.01) -> None:
        if selection not in ("greedy", "softmax"):
            raise ValueError(f"unknown selection {selection!r}; choose greedy or softmax")
        self.n, self.selection, self.greedy_prob = int(n_goals), selection, float(greedy_prob)
        self.temperature, self.decay, self.floor = float(temperature), float(decay), float(floor)
        self.values = np.zeros(self.n)
        self.last_pe = np.full(self.n, np.nan)

    def _progress(self, goal: int, pe: float) -> float:
        raise NotImplementedError

    def update(self, goal: int, pe: float) -> float:
        """Record prediction error ``pe`` (>= 0, code units) of ``goal``; returns the goal's new interest."""
        new = self._progress(goal, float(pe))
        self.values *= self.decay
        self.values[goal] = new
        self.values[self.values < self.floor] = 0.0
        self.last_pe[goal] = pe
        return float(self.values[goal])

    def select(self, rng: np.random.Generator) -> int:
        if self.selection == "softmax":
            z = self.values / max(self.temperature, 1e-12)
            p = np.exp(z - z.max())
            return int(rng.choice(self.n, p=p / p.sum()))
        if rng.random() < self.greedy_prob:
            best = np.flatnonzero(self.values == self.values.max())
            return int(best[0] if len(best) == 1 else rng.choice(best))
        return int(rng.integers(self.n))

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values.copy(), "last_pe": self.last_pe.copy()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.values[...] = s["values"]
        self.last_pe[...] = s["last_pe"]


class LearningProgress(Interest):
    def __init__(self, n_goals: int, gain: float = 2.0, **kw: Any) -> None:
        super().__init__(n_goals, **kw)
        self.gain = float(gain)

    def _progress(self, goal: int, pe: float) -> float:
        prev = self.last_pe[goal]
        return 0.0 if np.isnan(prev) else float(np.tanh(self.gain * abs(pe - prev)))


class SlopeInterest(Interest):
    def __init__(self, n_goals: int, window: int = 10, **kw: Any) -> None:
        super().__init__(n_goals, **kw)
        if window < 2:
            raise ValueError(f"slope window must be >= 2, got {window}")
        self.window = int(window)
        self.history = np.full((self.n, self.window), np.nan)

    def _progress(self, goal: int, pe: float) -> float:
        h = self.history[goal]
        h[:-1] = h[1:].copy()
        h[-1] = pe
        y = h[~np.isnan(h)]
        if len(y) < 2:
            return 0.0
        x = np.arange(len(y), dtype=float)
        return float(abs(np.polyfit(x, y, 1)[0]))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": self.history.copy()}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        super().load_state_dict(s)
        self.history[...] = s["history"]


class RandomInterest(Interest):
    def _progress(self, goal: int, pe: float) -> float:
        return 0.0

    def select(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.n))


def make_interest(kind: str, n_goals: int, **kw: Any) -> Interest:
    """kind: "lp" | "slope" | "random"; kw: selection, greedy_prob, temperature, decay, floor, gain/window."""
    if kind == "lp":
        kw.pop("window", None)
        return LearningProgress(n_goals, **kw)
    if kind == "slope":
        kw.pop("gain", None)
        return SlopeInterest(n_goals, **kw)
    if kind == "random":
        kw.pop("gain", None)
        kw.pop("window", None)
        return RandomInterest(n_goals, **kw)
    raise ValueError(f"unknown interest {kind!r}; choose one of: lp, slope, random")
