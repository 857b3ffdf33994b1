"""`microfarm compare`: a tiny grid on the fake robot (process pool), table/figures, resume, Ray, bad flags."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_camera_robot import FakeCameraRobot, tiny_encoder

import robot.compare as compare
import robot.compare_report as compare_report
from microfarm import run_command
from robot.registry import ROBOTS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_robots():
    """An in-process compare run registers its ``module:Class`` robot; later tests see the registry as it was."""
    saved = dict(ROBOTS)
    yield
    ROBOTS.clear()
    ROBOTS.update(saved)


class GridFakeRobot(FakeCameraRobot):
    """The fake robot with the keyword arguments ``make_robot`` passes (a compare worker builds it by name)."""

    def __init__(self, arm: str = "gantry", size: int = 16, seed: int = 0, path_frames: bool = False,
                 gui: bool = False, **_: Any) -> None:
        super().__init__(size=size, path_frames=path_frames)


def _argv(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    enc = tmp_path / "enc.safetensors"
    if not enc.exists():
        tiny_encoder(enc)
    return ["--robot", f"{__name__}:GridFakeRobot", "--encoder", str(enc), "--hidden", "24,24", "--test-size", "50",
            "--goal-samples", "30", "--n-goals", "4", "--lr", "0.05", "--forget-window", "5",
            "--checkpoint-every", "100", "--steps", "12", "--seeds", "2", "--out", str(out), "--no-progress", *extra]


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "table.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_grid_in_a_pool_writes_table_and_figures_then_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    grid = ["--goals", "som", "random", "--memory-size", "0", "8"]
    assert compare.cli(_argv(tmp_path, out, *grid, "--workers", "2")) == 0
    names = ["goals=som,memory_size=0", "goals=som,memory_size=8", "goals=random,memory_size=0",
             "goals=random,memory_size=8"]
    for name in names:
        for s in (0, 1):
            summary = json.loads((out / "runs" / name / f"seed{s}" / "summary.json").read_text())
            assert summary["iterations"] == 12 and summary["seed"] == s
    rows = _table(out)
    assert [r["condition"] for r in rows] == names
    assert {"goals", "memory_size", "n", "fwd_mse_final_mean", "fwd_mse_final_std", "fwd_mse_auc_mean",
            "inv_mse_final_mean", "inv_mse_auc_std", "area_final_mean", "forgetting_auc_mean",
            "forgetting_end_mean", "kept_change_mean", "rise_auc_mean", "wall_s_mean"} <= set(rows[0])
    assert all(r["n"] == "2" and np.isfinite(float(r["fwd_mse_auc_mean"])) for r in rows)
    assert float(rows[0]["area_final_mean"]) > 0
    md = (out / "table.md").read_text()
    assert md.count("\n") == 2 + len(names) and "`goals=random,memory_size=8`" in md
    with open(out / "curves.csv", newline="") as f:
        curves = list(csv.DictReader(f))
    assert len(curves) == 12 * len(names) and {"fwd_mse_mean", "area_std", "rise_mean"} <= set(curves[0])
    for key in ("fwd_mse", "inv_mse", "area", "forgetting", "rise", "summary"):
        assert (out / "figures" / f"{key}.png").stat().st_size > 2000
    grid_json = json.loads((out / "compare.json").read_text())
    assert grid_json["axes"] == {"goals": ["som", "random"], "memory_size": [0, 8]} and grid_json["seeds"] == [0, 1]

    # re-run: everything is finished, nothing runs; a run without summary resumes from its checkpoint
    calls: list[bool] = []
    real = compare._run_one

    def counting(cfg: dict[str, Any], resume: bool) -> dict[str, Any]:
        calls.append(resume)
        return real(cfg, resume)

    monkeypatch.setattr(compare, "_run_one", counting)
    capsys.readouterr()
    assert compare.cli(_argv(tmp_path, out, *grid, "--workers", "1")) == 0
    assert calls == [] and "8 finished already, 0 to run" in capsys.readouterr().out
    victim = out / "runs" / names[1] / "seed1"
    before = (victim / "metrics.csv").read_text()
    (victim / "summary.json").unlink()
    assert compare.cli(_argv(tmp_path, out, *grid, "--workers", "1")) == 0
    assert calls == [True] and (victim / "summary.json").is_file()
    assert (victim / "metrics.csv").read_text() == before
    # a finished run with another config is refused, not overwritten
    assert run_command(compare.cli, _argv(tmp_path, out, *grid, "--lr", "0.01"), "microfarm compare") == 2
    assert "another config" in capsys.readouterr().err


def test_memory_zero_collapses_probability_axis() -> None:
    spec = compare.parse_args(["--goals", "som", "random", "--memory-size", "0", "320", "--memory-prob", "0.1",
                               "0.01", "--seeds", "3", "--hidden", "64,64", "--path-frames", "true"])
    names = [n for n, _ in compare.conditions(spec)]
    assert names == ["goals=som,memory_size=0", "goals=som,memory_size=320,memory_prob=0.1",
                     "goals=som,memory_size=320,memory_prob=0.01", "goals=random,memory_size=0",
                     "goals=random,memory_size=320,memory_prob=0.1", "goals=random,memory_size=320,memory_prob=0.01"]
    assert spec.fixed["hidden"] == [64, 64] and spec.fixed["path_frames"] is True
    assert spec.fixed["threads"] == 1 and spec.fixed["export"] is False and spec.seeds == [0, 1, 2]
    assert [n for n, _ in compare.conditions(compare.parse_args([]))] == ["default"]


def test_rise_is_error_above_best_so_far() -> None:
    cols = {"fwd_mse_r0": [4.0, 2.0, 3.0, 1.0], "fwd_mse_r1": [1.0, 1.0, 1.0, 1.0]}
    assert compare_report.rise(cols) == [0.0, 0.0, 0.5, 0.0]


def test_ray_missing_exits_2_with_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, installed or not
    rc = run_command(compare.cli, _argv(tmp_path, tmp_path / "r", "--ray", "auto"), "microfarm compare")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "ray" in err[0] and "microfarm[cluster]" in err[0]


@pytest.mark.parametrize("args,needle", [(["--memory-sise", "0"], "--memory-size"), (["--goals", "soom"], "som"),
                                         (["--seeds", "0"], "--seeds"), (["--memory-prob", "2"], "--memory-prob"),
                                         (["--hidden", "a,b"], "--hidden"), (["--path-frames", "maybe"], "true"),
                                         (["--workers", "0"], "--workers")])
def test_bad_flags_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    rc = run_command(compare.cli, [*args, "--out", str(tmp_path / "x")], "microfarm compare")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err


def test_bad_flag_from_the_command_line_is_one_line() -> None:
    p = subprocess.run([sys.executable, "-m", "microfarm", "compare", "--stepz", "5"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "--steps" in lines[0], p.stderr


class _FakeRay:
    """Just enough of Ray's API, run synchronously in this process, to exercise the --ray path."""

    def __init__(self) -> None:
        self.address: str | None = None
        self.cpus: list[int] = []

    def init(self, address: str | None = None, **_: Any) -> None:
        self.address = address

    def remote(self, fn: Any) -> Any:
        fake = self

        class Remote:
            def options(self, num_cpus: int = 1) -> Remote:
                fake.cpus.append(num_cpus)
                return self

            def remote(self, *args: Any) -> Any:
                return fake.Ref(fn(*args))

        return Remote()

    class Ref:
        def __init__(self, value: Any) -> None:
            self.value = value

    def wait(self, refs: list[Any], num_returns: int = 1) -> tuple[list[Any], list[Any]]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: Any) -> Any:
        return ref.value


def test_ray_path_with_a_stand_in_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    out = tmp_path / "ray"
    assert compare.cli(_argv(tmp_path, out, "--memory-size", "0", "--seeds", "1", "--ray", "auto")) == 0
    assert fake.address == "auto" and fake.cpus == [1]
    assert (out / "runs" / "default" / "seed0" / "summary.json").is_file()
    assert [r["condition"] for r in _table(out)] == ["default"]


def test_probe_measures_stop_at_leave_at_and_read_the_left_region() -> None:
    from robot.compare_report import _run_measures

    it = np.arange(1, 401, dtype=float)
    r0 = np.where(it <= 300, 1.0, 1.0 + (it - 300) / 100)  # the left region's error climbs to 2 after 300
    r1 = np.where(it <= 300, 2.0, 1.5)  # a kept region improves
    fwd = np.where(it <= 300, 0.5, 9.0)
    cols = {"iteration": it, "fwd_mse": fwd, "inv_mse": fwd / 10, "area": it / 400, "rise": 0 * it,
            "forgetting": np.where(it <= 300, 0.0, r0 - 1.0), "fwd_mse_r0": r0, "fwd_mse_r1": r1,
            "fwd_mse_r2": r1, "fwd_mse_r3": r1}
    m = _run_measures({k: list(v) for k, v in cols.items()},
                      {"config": {"leave_region": 0, "leave_at": 300}, "wall_time_s": 3.0})
    assert m["fwd_mse_final"] == 0.5 and m["area_final"] == 0.75  # at leave_at, not at the end
    assert abs(m["forgetting_end"] - np.mean(r0[-100:] - 1.0)) < 1e-9
    assert abs(m["forgetting_rel"] - m["forgetting_end"]) < 1e-9  # baseline error 1.0
    assert m["kept_change"] == -0.5
    plain = _run_measures({k: list(v) for k, v in cols.items()}, {"config": {}})
    assert plain["fwd_mse_final"] == 9.0 and np.isnan(plain["forgetting_rel"])
