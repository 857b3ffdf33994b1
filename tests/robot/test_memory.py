"""Episodic memory: filling, replacement policies, state round trip."""

from __future__ import annotations

import numpy as np
import pytest

from robot.memory import EpisodicMemory


def _fill(mem: EpisodicMemory, n: int, rng: np.random.Generator, start: int = 0, lp: float = 0.5) -> None:
    for i in range(start, start + n):
        mem.offer(np.full(2, i, np.float32), np.full(3, i, np.float32), rng, lp=lp, step=i)


def test_fills_then_replaces_with_probability() -> None:
    rng = np.random.default_rng(0)
    mem = EpisodicMemory(50, 0.1, "random", 2, 3)
    _fill(mem, 50, rng)
    assert mem.full and mem.replaced == 0 and mem.data()[0].shape == (50, 2)
    _fill(mem, 2000, rng, start=50)
    assert 150 < mem.replaced < 250  # ~ 0.1 * 2000
    assert mem.size == 50 and mem.seen == 2050


def test_zero_capacity_stores_nothing() -> None:
    mem = EpisodicMemory(0, 0.1, "random", 2, 3)
    _fill(mem, 10, np.random.default_rng(0))
    assert mem.full and mem.size == 0 and mem.data()[1].shape == (0, 3)


def test_lowest_lp_policy_keeps_high_progress_samples() -> None:
    rng = np.random.default_rng(0)
    mem = EpisodicMemory(10, 1.0, "lowest_lp", 2, 3)
    _fill(mem, 5, rng, lp=0.9)  # precious samples (ids 0..4)
    _fill(mem, 5, rng, start=5, lp=0.1)
    _fill(mem, 100, rng, start=10, lp=0.2)
    ids = set(mem.data()[0][:, 0].astype(int))
    assert set(range(5)) <= ids


def test_highest_lp_policy_drops_high_progress_samples() -> None:
    rng = np.random.default_rng(0)
    mem = EpisodicMemory(10, 1.0, "highest_lp", 2, 3)
    _fill(mem, 5, rng, lp=0.9)
    _fill(mem, 5, rng, start=5, lp=0.1)
    _fill(mem, 5, rng, start=10, lp=0.2)
    assert not set(range(5)) & set(mem.data()[0][:, 0].astype(int))


def test_reservoir_is_uniform_over_everything_seen() -> None:
    rng = np.random.default_rng(1)
    counts = np.zeros(4)
    for _ in range(300):
        mem = EpisodicMemory(20, 0.0, "reservoir", 2, 3)
        _fill(mem, 200, rng)
        counts += np.bincount(mem.data()[0][:, 0].astype(int) // 50, minlength=4)
    assert counts.min() / counts.max() > 0.85  # each quarter of the stream equally kept


def test_state_round_trip_and_mismatch() -> None:
    rng = np.random.default_rng(0)
    mem = EpisodicMemory(8, 0.5, "random", 2, 3)
    _fill(mem, 20, rng)
    other = EpisodicMemory(8, 0.5, "random", 2, 3)
    other.load_state_dict(mem.state_dict())
    assert np.array_equal(other.data()[0], mem.data()[0]) and other.stats(20) == mem.stats(20)
    with pytest.raises(ValueError, match="capacity"):
        EpisodicMemory(9, 0.5, "random", 2, 3).load_state_dict(mem.state_dict())
    with pytest.raises(ValueError, match="policy"):
        EpisodicMemory(8, 0.5, "fifo", 2, 3)
