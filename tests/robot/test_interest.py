"""Learning progress and goal selection."""

from __future__ import annotations

import numpy as np
import pytest

from robot.interest import LearningProgress, SlopeInterest, make_interest


def test_lp_rises_on_a_goal_whose_error_changes_and_decays_elsewhere() -> None:
    lp = LearningProgress(3)
    for t in range(10):
        lp.update(0, 1.0)  # constant error: no progress
        lp.update(1, 1.0 - 0.08 * t)  # error falling: progress
    assert lp.values[1] > 0.1 and lp.values[0] == 0.0
    assert lp.values[1] == pytest.approx(np.tanh(2 * 0.08))
    v = lp.values[1]
    lp.update(2, 0.5)
    assert lp.values[1] == pytest.approx(0.9 * v)
    for _ in range(40):
        lp.update(2, 0.5)
    assert lp.values[1] == 0.0  # decayed below the floor 0.01


def test_greedy_selection_prefers_argmax() -> None:
    lp = LearningProgress(4, greedy_prob=0.85)
    lp.values[:] = [0.0, 0.3, 0.1, 0.0]
    rng = np.random.default_rng(0)
    picks = np.bincount([lp.select(rng) for _ in range(4000)], minlength=4) / 4000
    assert picks[1] == pytest.approx(0.85 + 0.15 / 4, abs=0.03)


def test_ties_are_broken_at_random() -> None:
    lp = LearningProgress(4, greedy_prob=1.0)
    rng = np.random.default_rng(0)
    assert len(set(lp.select(rng) for _ in range(200))) == 4


def test_softmax_selection_follows_interest() -> None:
    it = make_interest("lp", 3, selection="softmax", temperature=0.1)
    it.values[:] = [0.0, 0.2, 0.0]
    rng = np.random.default_rng(0)
    picks = np.bincount([it.select(rng) for _ in range(3000)], minlength=3) / 3000
    p1 = np.exp(2) / (np.exp(2) + 2)
    assert picks[1] == pytest.approx(p1, abs=0.03)


def test_slope_interest_and_state() -> None:
    s = SlopeInterest(2, window=5)
    for t in range(8):
        s.update(0, 2.0 - 0.1 * t)
    assert s.values[0] == pytest.approx(0.1)
    t2 = SlopeInterest(2, window=5)
    t2.load_state_dict(s.state_dict())
    assert t2.update(0, 1.2) == s.update(0, 1.2)


def test_random_interest_and_unknown_kind() -> None:
    r = make_interest("random", 5)
    assert r.update(0, 1.0) == 0.0
    rng = np.random.default_rng(0)
    assert len({r.select(rng) for _ in range(100)}) == 5
    with pytest.raises(ValueError, match="lp, slope, random"):
        make_interest("novelty", 3)
