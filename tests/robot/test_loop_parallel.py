"""The two-thread loop (``ExploreConfig.parallel``) computes exactly what the sequential one does.

The parallel fit (forward model in the caller, inverse in a worker thread) and the fast frame encoder
(strided max-pool, convolutions split by output channels) are speed changes only: same SGD steps, batches,
shuffles and codes, so a seeded run's metrics are the sequential path's (here: bit for bit).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_camera_robot import FakeCameraRobot, tiny_explore_config

import robot.explore as explore
from models.autoencoder import AutoencoderConfig, ConvAutoencoder
from robot.explore import ExploreConfig, run
from robot.explore_parallel import FrameEncoder, ModeChooser, pool2_relu
from robot.online import OnlineModels


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The loop's torch threads (``threads=1``): the worker thread always uses one, and a product split over two
    intra-op threads may round differently."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(tmp_path: Path, out: str, **kw: object) -> ExploreConfig:
    return tiny_explore_config(tmp_path, out, **{"path_frames": True, **kw})


class _Alternate(ModeChooser):
    """Parallel on even iterations, sequential on odd ones."""

    def parallel(self, t: int) -> bool:
        return t % 2 == 0


class _TodaysEncoder:
    """The loop's encoding before ``FrameEncoder``: ``ae.encode_images``."""

    def __init__(self, ae: ConvAutoencoder, pool: object) -> None:
        self.ae, self.pool = ae, pool

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.ae.encode_images(images)


def _table(path: Path) -> tuple[list[str], np.ndarray]:
    """metrics.csv without its clock: column names and values (rows, columns)."""
    with open(path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [k for k in rows[0] if k != "elapsed_s"]
    return cols, np.array([[float(r[k]) for k in cols] for r in rows])


def test_parallel_fit_is_bit_identical_to_the_fused_fit() -> None:
    rng = np.random.default_rng(0)
    motor = rng.random((37, 2), dtype=np.float32)  # 37: a short last batch
    code = rng.standard_normal((37, 8)).astype(np.float32)
    fused, par = OnlineModels(2, 8, (32, 32), seed=4), OnlineModels(2, 8, (32, 32), seed=4, parallel=True)
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    with par:
        for _ in range(4):
            assert fused.fit(motor, code, r1, 2, 16) == par.fit(motor, code, r2, 2, 16)
        tm, tc = rng.random((50, 2), dtype=np.float32), rng.standard_normal((50, 8)).astype(np.float32)
        want = (fused.fit(motor, code, r1, 2, 16), fused.test_errors(tm, tc))
        got = par.fit_test(motor, code, r2, 2, 16, tm, tc)  # each thread evaluates its model after its fit
    assert got[0] == want[0] and got[1].keys() == want[1].keys()
    assert all(np.array_equal(got[1][k], want[1][k]) for k in want[1])
    assert r1.random() == r2.random()  # the same draws from the run's generator
    a, b = fused.state_dict(), par.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("cfg", [AutoencoderConfig(size=16, color="gray", channels=(4, 4), code_size=8),
                                 AutoencoderConfig()])  # tiny, and paper size (its convolutions are split)
def test_frame_encoder_equals_encode_images(cfg: AutoencoderConfig) -> None:
    torch.manual_seed(0)
    ae = ConvAutoencoder(cfg).eval()
    images = (np.random.default_rng(1).random((5, cfg.size, cfg.size, 3)) * 255).astype(np.uint8)
    with OnlineModels(2, 8, (8,), parallel=True) as m:
        for pool in (None, m.worker()):
            enc = FrameEncoder(ae, pool)
            assert enc.convs is not None  # the fast path, not the fallback
            assert np.array_equal(enc(images[0]), ae.encode_images(images[0]))
            assert np.array_equal(enc(images[:3]), ae.encode_images(images[:3]))


def test_pool2_relu_is_relu_then_max_pool() -> None:
    y = torch.randn(2, 3, 8, 6)
    assert torch.equal(pool2_relu(y.clone()), torch.nn.functional.max_pool2d(torch.relu(y), 2))


@pytest.mark.parametrize("hidden", [[24, 24], [64, 64]])
def test_parallel_run_equals_todays_sequential_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   hidden: list[int]) -> None:
    """Today's loop (fused fit, ``ae.encode_images``), the sequential loop with the fast encoder, and the
    parallel loop: the same metrics, row by row, bit for bit (the tolerance check first, for a readable
    failure). With 24 hidden units torch's CPU ``bmm`` uses its small-matrix kernel for the 1-2-sample
    batches of the first moves, which a 2-D ``mm`` would not reproduce; the parallel path keeps ``bmm``."""
    kw = dict(hidden=hidden, steps=40)
    par = run(_cfg(tmp_path, "par", parallel="on", **kw), robot=FakeCameraRobot(path_frames=True))
    seq = run(_cfg(tmp_path, "seq", parallel="off", **kw), robot=FakeCameraRobot(path_frames=True))
    monkeypatch.setattr(explore, "ModeChooser", _Alternate)  # "auto", switching every iteration
    alt = run(_cfg(tmp_path, "alt", parallel="auto", **kw), robot=FakeCameraRobot(path_frames=True))
    monkeypatch.setattr(explore, "FrameEncoder", _TodaysEncoder)
    ref = run(_cfg(tmp_path, "ref", parallel="off", **kw), robot=FakeCameraRobot(path_frames=True))
    (cols, want), (cols_p, got), (_, got_s) = _table(ref), _table(par), _table(seq)
    assert cols == cols_p and want.shape == (40, len(cols))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert np.array_equal(got_s, want, equal_nan=True)  # the fast encoder changes nothing
    assert np.array_equal(got, want, equal_nan=True)
    assert np.array_equal(_table(alt)[1], want, equal_nan=True)  # switching mode mid-run changes nothing


def test_mode_chooser_probes_a_b_b_a_and_keeps_the_faster() -> None:
    c = ModeChooser(first=1, period=20, probe=2)  # probe: iterations 1-8, 21-28, ...
    assert [c.parallel(t) for t in range(1, 10)] == [True, True, False, False, False, False, True, True, True]
    for t in range(1, 21):  # sequential is faster here
        c.record(t, 1.0 if c.parallel(t) else 0.5)
    assert c.best is False and c.parallel(9) is False and c.switches == 1
    assert [c.parallel(t) for t in range(21, 29)] == [False, False, True, True, True, True, False, False]
    for t in range(21, 41):  # now the two-thread loop is
        c.record(t, 0.3 if c.parallel(t) else 0.5)
    assert c.best is True and c.switches == 2
    fixed = ModeChooser(first=1, fixed=False)
    assert not any(fixed.parallel(t) for t in range(1, 300))
