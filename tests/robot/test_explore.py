"""The exploration loop on a fake robot: outputs, resume == uninterrupted, NaN handling, CLI errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_camera_robot import FakeCameraRobot, tiny_explore_config

from microfarm import UsageError
from robot.explore import ExploreConfig, run
from robot.explore_state import load_checkpoint
from robot.online import OnlineModels, TrainingDivergedError

ROOT = Path(__file__).resolve().parents[2]
SETUP_MOVES = 50 + 30 + 1  # test positions + goal views + move to the centre


def _cfg(tmp_path: Path, out: str, **kw: object) -> ExploreConfig:
    return tiny_explore_config(tmp_path, out, **kw)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(f)]


def test_short_run_writes_everything(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "run", steps=30, export=True, plots=True, path_frames=True)
    out = run(cfg, robot=FakeCameraRobot(path_frames=True))
    rows = _rows(out)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 31))
    assert float(rows[-1]["area"]) > 0.1
    assert {"lp_0", "lp_3", "forgetting", "regions_left", "fwd_mse_r0", "mem_size"} <= set(rows[0])
    assert int(rows[-1]["mem_size"]) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 30 and np.isfinite(summary["final"]["fwd_mse"])
    for name in ("mse", "interest", "explored", "goals"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    manifest = json.loads((out / "export" / "manifest.json").read_text())
    assert set(manifest["models"]) == {"encoder", "forward", "inverse"}
    assert manifest["models"]["encoder"]["preprocess"]["color"] == "gray"
    assert manifest["motor"]["low"] == [0.0, 0.0]
    assert (out / "checkpoint" / "state.safetensors").is_file()


def test_resume_after_ctrl_c_equals_uninterrupted(tmp_path: Path) -> None:
    full = run(_cfg(tmp_path, "full"), robot=FakeCameraRobot())
    cut = _cfg(tmp_path, "cut")
    with pytest.raises(KeyboardInterrupt):
        run(cut, robot=FakeCameraRobot(interrupt_at=SETUP_MOVES + 23))
    assert int(load_checkpoint(tmp_path / "cut")["state"]["iteration"]) == 23
    run(_cfg(tmp_path, "ignored", resume=tmp_path / "cut"), robot=FakeCameraRobot())
    assert _rows(tmp_path / "cut") == _rows(full)
    assert len(_rows(full)) == 40


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fit, calls = OnlineModels.fit, {"n": 0}

    def poisoned(self: OnlineModels, *a: object, **k: object) -> tuple[float, float]:
        calls["n"] += 1
        if calls["n"] == 26:
            self.weights[1][0, 0, 0] = float("nan")
        return fit(self, *a, **k)

    monkeypatch.setattr(OnlineModels, "fit", poisoned)
    with pytest.raises(TrainingDivergedError, match="iteration 26.*last good checkpoint"):
        run(_cfg(tmp_path, "nan"), robot=FakeCameraRobot())
    state = load_checkpoint(tmp_path / "nan")
    assert int(state["state"]["iteration"]) == 20
    assert all(np.isfinite(v).all() for v in state["models"].values())
    assert not (tmp_path / "nan" / "summary.json").exists()


def test_missing_encoder_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="train-encoder"):
        run(_cfg(tmp_path, "x", encoder=tmp_path / "nope.safetensors"), robot=FakeCameraRobot())


@pytest.mark.parametrize("args,needle", [(["--memory-sise", "3"], "--memory-size"),
                                         (["--goals", "soom"], "som"), (["--steps", "many"], "--steps"),
                                         (["--edm-weight", "0.1", "--edm-groups", "7"], "--edm-groups")])
def test_bad_flags_exit_2_with_one_line(args: list[str], needle: str) -> None:
    p = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr


def test_leave_region_command_moves_to_the_nearest_outside_point() -> None:
    from robot.explore_state import leave_region_command, region_of

    assert np.allclose(leave_region_command(np.array([0.2, 0.45]), 0), [0.2, 0.501])  # y is closer to the split
    assert np.allclose(leave_region_command(np.array([0.9, 0.6]), 3), [0.9, 0.499])
    assert np.allclose(leave_region_command(np.array([0.52, 0.1]), 1), [0.499, 0.1])
    assert np.allclose(leave_region_command(np.array([0.7, 0.2]), 0), [0.7, 0.2])  # outside: unchanged
    assert np.allclose(leave_region_command(np.array([0.2, 0.2]), -1), [0.2, 0.2])  # no probe
    pts = np.random.default_rng(0).uniform(0, 1, (200, 2))
    for r in range(4):
        assert all(region_of(leave_region_command(p, r))[0] != r for p in pts)


def test_forgetting_probe_leaves_the_region_and_measures_its_error_rise(tmp_path: Path) -> None:
    """After --leave-at no sample falls in the left quadrant, and ``forgetting`` = that quadrant's test error
    minus its mean over the last LEAVE_BASELINE iterations up to --leave-at."""
    from robot.explore_state import LEAVE_BASELINE, region_of

    cfg = _cfg(tmp_path, "probe", steps=150, leave_region=0, leave_at=120, memory_size=0, path_frames=True)
    out = run(cfg, robot=FakeCameraRobot(path_frames=True))
    rows = _rows(out)
    assert all(float(r["forgetting"]) == 0.0 and int(r["regions_left"]) == 0 for r in rows[:120])
    assert all(int(r["regions_left"]) == 1 for r in rows[120:])
    r0 = np.array([float(r["fwd_mse_r0"]) for r in rows])
    base = r0[120 - LEAVE_BASELINE:120].mean()
    got = np.array([float(r["forgetting"]) for r in rows[120:]])
    assert np.allclose(got, r0[120:] - base, atol=1e-6)
    positions = load_checkpoint(out)["tracker"]["positions"]
    assert len(positions) > 150 and not np.any(region_of(positions[-30:]) == 0), "a sample fell in the left region"
    before = positions[:-30]
    assert np.mean(region_of(before) == 0) > 0.1  # it was explored before


def test_probe_flags_are_checked(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--leave-at"):
        run(_cfg(tmp_path, "x", leave_region=2, leave_at=40), robot=FakeCameraRobot())
    with pytest.raises(UsageError, match="--leave-region"):
        run(_cfg(tmp_path, "y", leave_region=4, leave_at=10), robot=FakeCameraRobot())


def test_veca_columns_and_edm_run(tmp_path: Path) -> None:
    """VECA of each hidden layer is logged at every --veca-every-th iteration (NaN between); with EDM on, the run
    trains differently; --veca-every 0 leaves the columns out."""
    plain = _rows(run(_cfg(tmp_path, "plain", steps=20, veca_every=5), robot=FakeCameraRobot()))
    cols = ["veca_fwd_h0", "veca_fwd_h1", "veca_inv_h0", "veca_inv_h1"]
    for r in plain:
        vals = [float(r[c]) for c in cols]
        if int(r["iteration"]) % 5 == 0:
            assert all(np.isfinite(v) and v >= 0 for v in vals)
        else:
            assert all(np.isnan(v) for v in vals)
    assert float(plain[-1]["veca_fwd_h0"]) != float(plain[4]["veca_fwd_h0"])
    edm = _rows(run(_cfg(tmp_path, "edm", steps=20, veca_every=5, edm_weight=0.5, edm_groups=4),
                    robot=FakeCameraRobot()))
    assert edm[-1]["fwd_mse"] != plain[-1]["fwd_mse"]
    off = _rows(run(_cfg(tmp_path, "off", steps=5, veca_every=0), robot=FakeCameraRobot()))
    assert not any(c.startswith("veca_") for c in off[0])


@pytest.mark.parametrize("kw,needle", [({"edm_weight": -0.1}, "--edm-weight"), ({"veca_every": -1}, "--veca-every"),
                                       ({"edm_weight": 0.1, "edm_groups": 1}, "--edm-groups")])
def test_edm_and_veca_values_are_checked(tmp_path: Path, kw: dict[str, object], needle: str) -> None:
    from robot.explore import validate_config

    with pytest.raises(UsageError, match=needle):
        validate_config(_cfg(tmp_path, "x", **kw))
    assert not (tmp_path / "x").exists()


def test_resume_reads_rows_with_columns_added_since(tmp_path: Path) -> None:
    """A metrics.csv whose older rows lack a newer column (an empty cell) reopens with NaN there, not a crash."""
    from robot.explore_state import Tracker

    path = tmp_path / "metrics.csv"
    path.write_text("iteration,fwd_mse,veca_fwd_h0\n1,0.5,\n2,0.4,0.01\n")
    tracker = Tracker(2, 1, np.zeros((4, 2), np.float32), 5, extra_columns=("veca_fwd_h0",))
    tracker.open_csv(path, keep_until=2)
    tracker.close()
    assert np.isnan(tracker.rows[0]["veca_fwd_h0"]) and tracker.rows[1]["veca_fwd_h0"] == 0.01
