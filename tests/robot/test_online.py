"""Online forward/inverse models: equal to two autograd MLPs under torch SGD, and test error falls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot.goals import make_goals
from robot.online import OnlineModels, TrainingDivergedError


def _world(motor: np.ndarray) -> np.ndarray:
    """A smooth motor (N, 2) -> code (N, 6) map."""
    x, y = motor[:, :1], motor[:, 1:]
    return np.concatenate([np.sin(3 * x), np.cos(2 * y), x * y, x - y, np.sin(2 * (x + y)), y**2], 1).astype(
        np.float32)


class _Identity:
    def permutation(self, n: int) -> np.ndarray:
        return np.arange(n)


def test_fused_step_equals_torch_sgd_nesterov() -> None:
    m = OnlineModels(2, 6, hidden=(16, 12), lr=0.01, momentum=0.8, seed=3)
    fwd, inv = m.to_modules()
    opt = torch.optim.SGD([*fwd.parameters(), *inv.parameters()], lr=0.01, momentum=0.8, nesterov=True)
    rng = np.random.default_rng(0)
    motor = rng.random((20, 2), dtype=np.float32)
    code = _world(motor)
    mt, ct = torch.from_numpy(motor), torch.from_numpy(code)
    for _ in range(2):  # 2 epochs, batches 16 + 4, no shuffling
        for s in (slice(0, 16), slice(16, 20)):
            opt.zero_grad()
            (torch.mean((fwd(mt[s]) - ct[s]) ** 2) + torch.mean((inv(ct[s]) - mt[s]) ** 2)).backward()
            opt.step()
    m.fit(motor, code, _Identity(), epochs=2, batch_size=16)  # type: ignore[arg-type]
    f2, i2 = m.to_modules()
    for a, b in zip([*fwd.parameters(), *inv.parameters()], [*f2.parameters(), *i2.parameters()], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():
        assert np.allclose(m.predict_code(motor), fwd(mt).numpy(), atol=1e-5)
        assert np.allclose(m.predict_motor(code), inv(ct).numpy(), atol=1e-5)


def test_test_error_falls_over_a_short_run() -> None:
    rng = np.random.default_rng(0)
    test_m = rng.random((50, 2), dtype=np.float32)
    test_c = _world(test_m)
    m = OnlineModels(2, 6, hidden=(32, 32), lr=0.05, seed=0)
    before = m.test_errors(test_m, test_c)
    seen_m = np.zeros((0, 2), np.float32)
    for _ in range(150):
        seen_m = np.concatenate([seen_m, rng.random((1, 2), dtype=np.float32)])[-48:]
        m.fit(seen_m, _world(seen_m), rng)
    after = m.test_errors(test_m, test_c)
    assert after["fwd_mse"] < 0.5 * before["fwd_mse"]
    assert after["inv_mse"] < 0.5 * before["inv_mse"]
    assert after["fwd_per_sample"].shape == (50,)


def test_state_round_trip_and_divergence() -> None:
    rng = np.random.default_rng(0)
    motor = rng.random((8, 2), dtype=np.float32)
    a, b = OnlineModels(2, 6, (8,), seed=0), OnlineModels(2, 6, (8,), seed=1)
    a.fit(motor, _world(motor), rng)
    b.load_state_dict({k: v.numpy() for k, v in a.state_dict().items()})
    assert np.array_equal(a.predict_code(motor), b.predict_code(motor))
    big = OnlineModels(2, 6, (8,), lr=1e6, seed=0)
    with pytest.raises(TrainingDivergedError, match="--lr"):
        for _ in range(20):
            big.fit(motor, _world(motor) * 1e3, rng)


@pytest.mark.parametrize("kind", ["som", "kmeans", "dataset", "random"])
def test_goals_shapes_and_determinism(kind: str) -> None:
    codes = np.random.default_rng(0).normal(size=(100, 6)).astype(np.float32)
    g = make_goals(kind, codes, 9, seed=1)
    assert g.shape == (9, 6) and g.dtype == np.float32
    assert np.array_equal(g, make_goals(kind, codes, 9, seed=1))
