"""Episodic memory of (motor, code) samples, replayed in every online fit (Schillaci et al. 2020).

The encoder is frozen during exploration, so a sample's image is stored as its code (same information for
the models, 1/100 of the bytes). Until the memory is full every offered sample is stored. Afterwards:

- ``random``: with probability ``prob`` the sample overwrites a uniformly random slot (the paper);
- ``lowest_lp`` / ``highest_lp``: with probability ``prob`` it overwrites the slot whose sample was stored
  with the lowest / highest learning progress (the LP of the goal being pursued when it was collected);
  ``lowest_lp`` thus keeps the samples gathered while learning progressed most (the follow-up's policies);
- ``reservoir``: classic reservoir sampling (the memory stays a uniform sample of everything seen;
  ``prob`` is ignored).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

__all__ = ["EpisodicMemory", "MemoryPolicy", "POLICIES"]

MemoryPolicy = Literal["random", "lowest_lp", "highest_lp", "reservoir"]
POLICIES: tuple[str, ...] = ("random", "lowest_lp", "highest_lp", "reservoir")


class EpisodicMemory:
    """capacity: number of samples (0 = no memory); prob: replacement probability once full.

    Arrays: ``motor`` (capacity, D) float32, ``code`` (capacity, C) float32, ``lp`` (capacity,) float32,
    ``stored_at`` (capacity,) int64 (the ``step`` of insertion); the first ``size`` rows are valid.
    """

    def __init__(self, capacity: int, prob: float, policy: str, motor_dim: int, code_dim: int) -> None:
        if capacity < 0:
            raise ValueError(f"memory capacity must be >= 0, got {capacity}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"memory update probability must be in [0, 1], got {prob}")
        if policy not in POLICIES:
            raise ValueError(f"unknown memory policy {policy!r}; choose one of: {', '.join(POLICIES)}")
        self.capacity, self.prob, self.policy = int(capacity), float(prob), policy
        self.motor = np.zeros((capacity, motor_dim), np.float32)
        self.code = np.zeros((capacity, code_dim), np.float32)
        self.lp = np.zeros(capacity, np.float32)
        self.stored_at = np.zeros(capacity, np.int64)
        self.size = 0  # valid rows
        self.seen = 0  # samples offered
        self.replaced = 0  # overwrites after the memory was full

    @property
    def full(self) -> bool:
        return self.size >= self.capacity

    def _slot(self, rng: np.random.Generator) -> int | None:
        if self.size < self.capacity:
            return self.size
        if self.capacity == 0:
            return None
        if self.policy == "reservoir":
            j = int(rng.integers(self.seen))  # seen already counts this sample
            return j if j < self.capacity else None
        if rng.random() >= self.prob:
            return None
        if self.policy == "random":
            return int(rng.integers(self.capacity))
        if self.policy == "lowest_lp":
            return int(np.argmin(self.lp))
        return int(np.argmax(self.lp))

    def offer(self, motor: np.ndarray, code: np.ndarray, rng: np.random.Generator, lp: float = 0.0,
              step: int = 0) -> bool:
        """Offer one sample (motor (D,), code (C,)); returns whether it was stored."""
        self.seen += 1
        slot = self._slot(rng)
        if slot is None:
            return False
        if slot < self.size:
            self.replaced += 1
        else:
            self.size += 1
        self.motor[slot], self.code[slot], self.lp[slot], self.stored_at[slot] = motor, code, lp, step
        return True

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """Views of the valid samples: motor (size, D), code (size, C)."""
        return self.motor[: self.size], self.code[: self.size]

    def stats(self, step: int = 0) -> dict[str, float]:
        """size, seen, replaced, mean age of the stored samples (in steps) and their mean stored LP."""
        n = self.size
        age = float(step - self.stored_at[:n].mean()) if n else 0.0
        return {"mem_size": n, "mem_seen": self.seen, "mem_replaced": self.replaced, "mem_mean_age": age,
                "mem_mean_lp": float(self.lp[:n].mean()) if n else 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "prob": self.prob, "policy": self.policy, "motor": self.motor.copy(),
                "code": self.code.copy(), "lp": self.lp.copy(), "stored_at": self.stored_at.copy(),
                "size": self.size, "seen": self.seen, "replaced": self.replaced}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        if (int(s["capacity"]), str(s["policy"])) != (self.capacity, self.policy):
            raise ValueError(f"memory state is for capacity {s['capacity']} / {s['policy']}, this memory is "
                             f"{self.capacity} / {self.policy}")
        self.prob = float(s["prob"])
        for k in ("motor", "code", "lp", "stored_at"):
            getattr(self, k)[...] = np.asarray(s[k])
        self.size, self.seen, self.replaced = int(s["size"]), int(s["seen"]), int(s["replaced"])
