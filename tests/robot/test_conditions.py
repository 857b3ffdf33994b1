"""Issue 18's conditions: a default run's metrics are unchanged, the measures count right, and a simulated run
with a distractor and unreachable goals reports them."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_camera_robot import FakeCameraRobot, tiny_explore_config

from robot.conditions import ConditionMeter, split_goals
from robot.explore import ExploreConfig, run
from robot.explore_state import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, out: str, **kw: object) -> ExploreConfig:
    return tiny_explore_config(tmp_path, out, **kw)


def _rows(path: Path) -> list[dict[str, float]]:
    with open(path / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def test_a_seeded_default_run_has_the_metrics_it_had_before_the_conditions(tmp_path: Path) -> None:
    # recorded with the code before issue 18 (commit 22273a2), same config and seed
    rows = _rows(run(_cfg(tmp_path, "g", seed=3), robot=FakeCameraRobot()))
    before = {10: (0.006856893189251423, 0.09183090925216675, 0.27712137976770695, 0),
              20: (0.002556235995143652, 0.09457609802484512, 0.43628805299680284, 0),
              40: (0.001097292872145772, 0.0934041440486908, 0.6547540102167517, 3)}
    for it, (fwd, inv, area, goal) in before.items():
        r = rows[it - 1]
        assert r["fwd_mse"] == pytest.approx(fwd, rel=1e-5) and r["inv_mse"] == pytest.approx(inv, rel=1e-5)
        assert r["area"] == pytest.approx(area, rel=1e-9) and int(r["goal"]) == goal
        assert r["fwd_mse_learn"] == r["fwd_mse"] and r["distractor_moves"] == 0  # no distractor: all learnable


def test_meter_counts_moves_goal_choices_and_cells() -> None:
    cells = np.ones(100, bool)
    cells[:10] = False  # the bottom row of cells is not learnable
    meter = ConditionMeter(np.array([True, False, True]), np.array([False, False, True]), cells)
    assert ConditionMeter.cells(np.array([[0.05, 0.05], [0.95, 0.95], [1.0, 0.0]])).tolist() == [0, 99, 9]
    assert ConditionMeter.cells(np.array([[1.0, 1.0], [0.0, 1.0]], np.float32)).tolist() == [99, 90]  # edges
    assert ConditionMeter.cell_centres(2)[11].tolist() == pytest.approx([0.15, 0.15])
    meter.add_move(np.array([[0.05, 0.05]]), True, 2, directed=False)  # random command: no goal choice
    meter.add_move(np.array([[0.55, 0.55], [0.15, 0.55]]), False, 2, directed=True)
    meter.add_move(np.array([[0.55, 0.55]]), True, 0, directed=True)
    errs = {"fwd_per_sample": np.array([1.0, 100.0, 3.0]), "inv_per_sample": np.array([0.5, 9.0, 0.5])}
    row = meter.row(errs)
    assert row["fwd_mse_learn"] == 2.0 and row["inv_mse_learn"] == 0.5
    assert row["distractor_moves"] == pytest.approx(2 / 3) and row["unreachable_choices"] == 0.5
    assert row["coverage_learn"] == pytest.approx(2 / 90)
    assert [split_goals(9, s) for s in (0.0, 0.01, 0.33, 0.5, 1.0)] == [0, 1, 3, 4, 9]


def test_simulated_run_with_distractor_and_unreachable_goals(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "d", steps=60, memory_size=8, random_prob=0.0, distractor="0.5,0,1,1",
               unreachable_share=0.5, unreachable_views="height", plots=True)
    out = run(cfg)
    rows = _rows(out)
    last = rows[-1]
    assert 0.2 < last["distractor_moves"] < 0.9  # random commands while the memory fills, then goal-directed
    assert 0 <= last["unreachable_choices"] <= 1 and np.isfinite(last["unreachable_choices"])
    assert 0 < last["coverage_learn"] <= 1
    assert any(r["fwd_mse_learn"] != r["fwd_mse"] for r in rows)  # some test views show the distractor
    assert (out / "plots" / "explored.png").stat().st_size > 1000


@pytest.mark.parametrize("args,needle", [
    (["--distractor", "0.5,0,1.5,1"], "leaves the bed"), (["--distractor", "0.5,0,0.5,1"], "zero size"),
    (["--unreachable-share", "-0.1"], "[0, 1]"), (["--goals", "random", "--unreachable-share", "0.3"], "no effect"),
    (["--robot", "files:.", "--distractor", "0.5,0,1,1"], "simulated robot")])
def test_bad_condition_flags_exit_2_and_write_nothing(tmp_path: Path, args: list[str], needle: str) -> None:
    p = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--out", str(tmp_path / "run"), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], p.stderr
    assert not (tmp_path / "run").exists()


def test_goldilocks_estimates_match_the_exact_hessian_and_pick_the_best_candidate() -> None:
    import torch

    from robot.init_select import _loss_fn, candidate_seeds, choose_init, curvature_ratio
    from robot.online import OnlineModels

    rng = np.random.default_rng(0)
    motor, code = rng.random((8, 2)).astype(np.float32), rng.random((8, 3)).astype(np.float32)
    models = OnlineModels(2, 3, (4,), seed=1)
    loss, params = _loss_fn(models, motor, code)
    sizes = [p.numel() for p in params]
    fwd, inv = models.to_modules()
    names = [n for n, _ in fwd.named_parameters()], [n for n, _ in inv.named_parameters()]

    def flat_loss(x: torch.Tensor) -> torch.Tensor:
        ps = [t.view_as(p) for t, p in zip(torch.split(x, sizes), params, strict=True)]
        m, c = torch.as_tensor(motor), torch.as_tensor(code)
        of = torch.func.functional_call(fwd, dict(zip(names[0], ps[:len(names[0])], strict=True)), (m,))
        oi = torch.func.functional_call(inv, dict(zip(names[1], ps[len(names[0]):], strict=True)), (c,))
        return ((of - c) ** 2).mean() + ((oi - m) ** 2).mean()

    hess = torch.autograd.functional.hessian(flat_loss, torch.cat([p.detach().flatten() for p in params]))
    ratio, trace, norm = curvature_ratio(models, motor, code, probes=400, power_iters=60)
    assert trace == pytest.approx(float(hess.trace()), rel=0.05)
    assert norm == pytest.approx(float(torch.linalg.eigvalsh(hess).abs().max()), rel=1e-3)
    assert choose_init(2, 3, (4,), 5, 1, motor, code) == (5, [])  # one candidate: the default initialisation
    seed, records = choose_init(2, 3, (4,), 5, 3, motor, code, "loss")
    assert [r["seed"] for r in records] == candidate_seeds(5, 3) and candidate_seeds(5, 3)[0] == 5
    assert seed == min(records, key=lambda r: r["loss"])["seed"]


def test_init_candidates_choose_the_models_initialisation(tmp_path: Path) -> None:
    import json

    out = run(_cfg(tmp_path, "init", steps=5, init_candidates=3), robot=FakeCameraRobot())
    init = json.loads((out / "summary.json").read_text())["init"]
    assert len(init["candidates"]) == 3
    assert init["seed"] == max(init["candidates"], key=lambda r: r["score"])["seed"]


class _CutSimRobot:
    """A ``SimRobot`` that sends SIGINT to this process on call ``at`` of ``send_action`` (as Ctrl-C would)."""

    @staticmethod
    def make(at: int | None, **kw: object) -> object:
        import os
        import signal

        from robot.sim_robot import SimRobot

        class Cut(SimRobot):
            calls = 0

            def _send_action(self, action: np.ndarray) -> None:
                Cut.calls += 1
                if at is not None and Cut.calls == at:
                    os.kill(os.getpid(), signal.SIGINT)
                super()._send_action(action)

        return Cut(**kw)


def test_resumed_run_with_a_distractor_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    """The leaves in the wind are drawn from the env's own generator: a checkpoint keeps its state, so a run
    interrupted and resumed sees the same frames (and logs the same metrics) as one that was not."""
    kw = dict(steps=30, memory_size=8, random_prob=0.0, distractor="0.5,0,1,1", checkpoint_every=5)
    robot_kw = dict(arm="gantry", size=16, seed=0, distractor="0.5,0,1,1")
    whole = _CutSimRobot.make(None, **robot_kw)
    full = run(_cfg(tmp_path, "full", **kw), robot=whole)
    setup_moves = type(whole).calls - 30  # test views, goal views, cells of the learnable part, the centre
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(tmp_path, "cut", **kw), robot=_CutSimRobot.make(setup_moves + 17, **robot_kw))
    assert int(load_checkpoint(tmp_path / "cut")["state"]["iteration"]) == 17
    run(_cfg(tmp_path, "ignored", resume=tmp_path / "cut", **kw), robot=_CutSimRobot.make(None, **robot_kw))
    def text_rows(path: Path) -> list[dict[str, str]]:  # as written (NaN columns compare equal as text)
        with open(path / "metrics.csv", newline="") as f:
            return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(f)]

    assert len(text_rows(tmp_path / "cut")) == 30
    assert text_rows(tmp_path / "cut") == text_rows(full)
