"""The parallel loops (``ExploreConfig.parallel``: process, thread) compute exactly what the sequential one does.

The parallel fit (forward model in the caller, inverse in a worker thread or a child process on shared
tensors) and the fast frame encoder (strided max-pool, convolutions split by output channels) are speed
changes only: same SGD steps, batches, shuffles and codes, so a seeded run's metrics are the sequential
path's (here: bit for bit). Each test that starts a child process costs ~2 s (it imports torch).
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_camera_robot import FakeCameraRobot, tiny_explore_config

import robot.explore as explore
import robot.explore_parallel as explore_parallel
import robot.online_proc as online_proc
from models.autoencoder import AutoencoderConfig, ConvAutoencoder
from robot.explore import ExploreConfig, run
from robot.explore_parallel import FrameEncoder, ModeChooser, pool2_relu
from robot.explore_state import load_checkpoint
from robot.online import OnlineModels, TrainingDivergedError


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


def _fit_like_fused(par: OnlineModels, sizes: tuple[int, ...] = (37, 37, 37, 37)) -> None:
    """``par`` fits (and ``fit_test``s) exactly like a fused twin, on data sets of ``sizes`` samples."""
    rng = np.random.default_rng(0)
    fused = OnlineModels(2, 8, (32, 32), seed=4)
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    for n in sizes:  # 37: a short last batch
        motor, code = rng.random((n, 2), dtype=np.float32), rng.standard_normal((n, 8)).astype(np.float32)
        assert fused.fit(motor, code, r1, 2, 16) == par.fit(motor, code, r2, 2, 16)
    tm, tc = rng.random((50, 2), dtype=np.float32), rng.standard_normal((50, 8)).astype(np.float32)
    want = (fused.fit(motor, code, r1, 2, 16), fused.test_errors(tm, tc))
    got = par.fit_test(motor, code, r2, 2, 16, tm, tc)  # each side evaluates its model after its fit
    assert got[0] == want[0] and got[1].keys() == want[1].keys()
    assert all(np.array_equal(got[1][k], want[1][k]) for k in want[1])
    assert r1.random() == r2.random()  # the same draws from the run's generator
    a, b = fused.state_dict(), par.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_parallel_fit_is_bit_identical_to_the_fused_fit() -> None:
    with OnlineModels(2, 8, (32, 32), seed=4, parallel=True) as par:
        _fit_like_fused(par)


def test_process_fit_is_bit_identical_and_the_child_stops(tmp_path: Path) -> None:
    """Mode "process": the inverse model in a child process on shared tensors, the data buffers growing with
    the data (12 -> 37 -> 90 samples); the child ignores SIGINT (the parent's Ctrl-C handling decides), its NaN
    shows as a diverged fit, and ``close()`` stops it."""
    par = OnlineModels(2, 8, (32, 32), seed=4, parallel="process")
    assert par.start_process()
    child = par._proc.proc  # type: ignore[union-attr]
    os.kill(child.pid, signal.SIGINT)  # while it starts (imports torch): blocked, then ignored
    assert par.process_ready(wait=True)
    os.kill(child.pid, signal.SIGINT)
    _fit_like_fused(par, (12, 37, 90, 37))
    assert child.is_alive() and par._proc is not None and par._proc.child_s > 0  # the child did fit
    _speculate_like_fused(par)
    par.weights[1][0, 0, 0] = float("nan")  # the parent's write is the child's weight
    motor = np.random.default_rng(1).random((20, 2), dtype=np.float32)
    with pytest.raises(TrainingDivergedError):
        par.fit(motor, np.zeros((20, 8), np.float32), np.random.default_rng(0), 2, 16)
    par.close()
    assert not child.is_alive()


def _speculate_like_fused(par: OnlineModels) -> None:
    """Fits of ``par`` whose first steps the child ran before (``speculate``) equal a fused twin's, whether the
    expected data and permutation were right (the steps are kept) or wrong (they are undone)."""
    fused = OnlineModels(2, 8, (32, 32), seed=4)
    fused.load_state_dict(par.state_dict())
    r1, r2, data = np.random.default_rng(3), np.random.default_rng(3), np.random.default_rng(5)
    for case in ("right", "wrong permutation", "wrong sample", "right"):
        motor, code = data.random((60, 2), dtype=np.float32), data.standard_normal((60, 8)).astype(np.float32)
        ahead = np.random.Generator(np.random.PCG64())
        ahead.bit_generator.state = r2.bit_generator.state
        perm0 = ahead.permutation(60)  # what the fit will draw first
        sm, sc = motor.copy(), code.copy()
        sm[perm0[40]] = np.nan  # a sample not known yet: 40 // 16 = 2 steps can run before it
        if case == "wrong permutation":
            perm0 = perm0[::-1].copy()
        if case == "wrong sample":
            sc[perm0[3]] += 1.0
        before = dict(par.prefix_stats)
        assert par.speculate(sm, sc, perm0, 2, 16)
        time.sleep(0.3)  # let the child run its steps
        assert fused.fit(motor, code, r1, 2, 16) == par.fit(motor, code, r2, 2, 16)
        kept = par.prefix_stats["kept"] - before["kept"]
        assert (kept, par.prefix_stats["undone"] - before["undone"]) == ((1, 0) if case == "right" else (0, 1))
    a, b = fused.state_dict(), par.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_process_start_failure_falls_back_to_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_spawn(method: str) -> None:
        raise OSError("no processes here")

    monkeypatch.setattr(online_proc.mp, "get_context", no_spawn)
    with OnlineModels(2, 8, (32, 32), seed=4, parallel="process") as par:
        assert not par.start_process() and not par.process_ready(wait=True)
        _fit_like_fused(par)  # in the worker thread, no error


def test_a_child_that_dies_at_start_counts_as_failed() -> None:
    fp = online_proc.FitProcess({"P": 8, "weights": [], "biases": [], "bufs": []})  # too little: the child exits
    assert not fp.wait_ready(60.0) and fp.failed and fp.proc is None


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
    par = run(_cfg(tmp_path, "par", parallel="thread", **kw), robot=FakeCameraRobot(path_frames=True))
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
    c.restart(45, start=False)  # e.g. the child process came up: probe again from iteration 45
    assert [c.parallel(t) for t in range(45, 54)] == [False, False, True, True, True, True, False, False, False]
    fixed = ModeChooser(first=1, fixed=False)
    assert not any(fixed.parallel(t) for t in range(1, 300))


def _probes(c: ModeChooser, last: int, seconds: object) -> list[int]:
    """Run ``c`` over iterations 1..last (``seconds(t, parallel)`` each): the iterations where a probe began."""
    starts, prev = [], True
    for t in range(1, last + 1):
        par = c.parallel(t)
        if par != c.best and prev == c.best:
            starts.append(t - c.probe)
        prev = par
        c.record(t, seconds(t, par))  # type: ignore[operator]
    return starts


def test_mode_chooser_probes_less_while_the_choice_holds() -> None:
    """A probe that keeps the choice doubles the gap to the next (up to max_period); a switch resets it; a
    probe whose last iteration was not recorded still ends."""
    c = ModeChooser(first=1, period=20, probe=2, max_period=80)
    assert _probes(c, 400, lambda t, par: 0.3 if par else 0.5) == [1, 41, 121, 201, 281, 361]
    assert c.switches == 0 and c.period == 80
    c = ModeChooser(first=1, period=20, probe=2, max_period=80)
    assert _probes(c, 200, lambda t, par: 0.3 if par == (t < 50) else 0.5) == [1, 41, 121, 141, 181]
    assert c.switches == 1 and c.best is False
    c = ModeChooser(first=1, period=20, probe=2)
    for t in range(1, 8):  # iteration 8 (the probe's last) not recorded
        c.record(t, 0.5 if c.parallel(t) else 0.1)
    c.record(9, 0.1)
    assert c.best is False and c.first == 21


_halt = OnlineModels.halt_speculation


def _halt_after_a_step(self: OnlineModels) -> None:
    """``halt_speculation`` once the child's prefix has done a step (the fake robot's moves take no time)."""
    end = time.monotonic() + 10.0
    while self._spec is not None and self._proc is not None and not self._proc.prefix_steps():
        if time.monotonic() > end:
            break
        time.sleep(0.001)
    _halt(self)


def test_process_run_interrupted_and_resumed_equals_the_sequential_run(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``--parallel process``: a run cut by Ctrl-C at iteration 23 (the first Ctrl-C: checkpoint, then stop) and
    resumed gives the sequential run's metrics, bit for bit, also where the child began a fit while the robot
    moved; no child process outlives its run. (Without path frames: a resumed run with path frames differs from
    an uninterrupted one in every mode, ~1e-7.)"""
    setup_moves = 50 + 30 + 1  # test positions + goal views + move to the centre
    kw = {"memory_size": 48}  # fits of up to 64 samples: 4 batches
    seq = run(tiny_explore_config(tmp_path, "seq", parallel="off", **kw), robot=FakeCameraRobot())
    result, fits, prefixes = online_proc.FitProcess.result, [], []
    take = OnlineModels._take_prefix

    def counted(self: online_proc.FitProcess) -> object:
        fits.append(1)
        return result(self)

    def taken(self: OnlineModels, *a: object) -> int:
        prefixes.append(take(self, *a))
        return prefixes[-1]

    monkeypatch.setattr(online_proc.FitProcess, "result", counted)
    monkeypatch.setattr(OnlineModels, "_take_prefix", taken)
    monkeypatch.setattr(OnlineModels, "halt_speculation", _halt_after_a_step)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_explore_config(tmp_path, "cut", parallel="process", **kw),
            robot=FakeCameraRobot(interrupt_at=setup_moves + 23))
    assert int(load_checkpoint(tmp_path / "cut")["state"]["iteration"]) == 23
    assert not multiprocessing.active_children()
    run(tiny_explore_config(tmp_path, "ignored", parallel="process", resume=tmp_path / "cut", **kw),
        robot=FakeCameraRobot())
    assert not multiprocessing.active_children()
    assert len(fits) == 40  # every fit had its inverse model fitted in the child
    assert sum(k > 0 for k in prefixes) > 10  # and many began with steps the child ran while the robot moved
    (cols, want), (cols_p, got) = _table(seq), _table(tmp_path / "cut")
    assert cols == cols_p and want.shape == (40, len(cols))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("hidden", [(24, 24), (320, 320)])
def test_predict_code_reads_the_forward_model_alone_with_the_same_bits(hidden: tuple[int, int]) -> None:
    """``predict_code`` runs on the forward model's view (so the loop may call it while the child fits the
    inverse model): the same bits as the two-model ``predict``, for 1 to 64 inputs."""
    m, rng = OnlineModels(2, 8, hidden, seed=1), np.random.default_rng(0)
    for n in (1, 1, 2, 5, 64):
        motor = rng.random((n, 2), dtype=np.float32)
        assert np.array_equal(m.predict_code(motor), m.predict(motor, np.zeros((n, 8), np.float32))[0])


class _StubModels:
    """What ``LoopMode`` asks of ``OnlineModels``, without threads or processes."""

    def __init__(self) -> None:
        self.started = 0

    def worker(self) -> None:
        return None

    def start_process(self) -> bool:
        self.started += 1
        return True


@pytest.mark.parametrize(("parallel", "threads", "left", "in_pool", "want"), [
    ("auto", 1, 5000, False, "process"), ("auto", 1, 100, False, "thread"), ("auto", 1, 5000, True, "thread"),
    ("auto", 2, 5000, False, "off"), ("thread", 1, 5000, False, "thread"), ("on", 1, 5000, False, "thread"),
    ("off", 1, 5000, False, "off")])
def test_loop_mode_starts_the_fit_process_only_where_it_pays(monkeypatch: pytest.MonkeyPatch, parallel: str,
                                                             threads: int, left: int, in_pool: bool,
                                                             want: str) -> None:
    """auto: the fit process for runs of >= PROCESS_MIN_STEPS iterations, not inside a process pool's worker
    (``microfarm compare --workers N``), not with torch threads; "on" is the old name of "thread"."""
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object() if in_pool else None)
    stub = _StubModels()
    loop = explore_parallel.LoopMode(stub, parallel, threads, left, 1)  # type: ignore[arg-type]
    mode = loop.par_mode if loop.chooser.parallel(1) or loop.chooser.fixed is None else "off"
    assert (mode, stub.started) == (want, int(want == "process"))


def test_auto_probes_the_fit_process_only_once_the_memory_is_full() -> None:
    """The child comes up at iteration 5 of a run whose memory fills by 320: the process loop runs from 5, the
    first probe against off begins at 321."""

    class Ready(_StubModels):
        mode = "off"

        def process_ready(self) -> bool:
            return True

    class Enc:
        pool = None

    stub = Ready()
    loop = explore_parallel.LoopMode(stub, "auto", 1, 5000, 1, settle=321)  # type: ignore[arg-type]
    modes = []
    for t in range(5, 360):
        loop.begin(t, Enc())  # type: ignore[arg-type]
        modes.append(stub.mode)
        loop.chooser.record(t, 0.01)
    assert modes[:321 - 5] == ["process"] * (321 - 5)  # no probe while the memory fills
    probe = loop.chooser.probe
    assert modes[321 - 5 + probe:321 - 5 + 3 * probe] == ["off"] * (2 * probe)  # then A B B A
