"""`microfarm train-encoder` on a tiny features dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from fake_camera_robot import FakeCameraRobot

from models.weights import read_metadata
from robot.explore import load_encoder
from robot.train_encoder import cli

ROOT = Path(__file__).resolve().parents[2]


def test_train_encoder_writes_weights_and_plots(tmp_path: Path) -> None:
    robot = FakeCameraRobot(size=16)
    motor = np.random.default_rng(0).random((24, 2), dtype=np.float32)
    np.savez(tmp_path / "features.npz", images=np.stack([robot.image_at(m) for m in motor]), motor=motor)
    out, weights = tmp_path / "run", tmp_path / "w" / "enc.safetensors"
    rc = cli(["--data", str(tmp_path), "--out", str(out), "--weights", str(weights), "--epochs", "3",
              "--size", "16", "--channels", "4", "--channels", "4", "--code-size", "8", "--no-progress",
              "--threads", "1"])
    assert rc == 0
    for name in ("encoder.safetensors", "loss.png", "reconstructions.png", "summary.json"):
        assert (out / name).is_file()
    assert read_metadata(weights)["config"]["channels"] == [4, 4]
    loss = json.loads((out / "summary.json").read_text())["loss"]["train"]
    assert len(loss) == 3 and loss[-1] < loss[0]
    assert load_encoder(weights).cfg.code_size == 8


def test_missing_dataset_exits_2(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "microfarm", "train-encoder", "--data", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "features.npz" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_info_plane_writes_csv_and_png(tmp_path: Path) -> None:
    import csv

    robot = FakeCameraRobot(size=16)
    motor = np.random.default_rng(1).random((24, 2), dtype=np.float32)
    np.savez(tmp_path / "features.npz", images=np.stack([robot.image_at(m) for m in motor]), motor=motor)
    out = tmp_path / "run"
    rc = cli(["--data", str(tmp_path), "--out", str(out), "--epochs", "2", "--size", "16", "--channels", "4",
              "--channels", "4", "--code-size", "8", "--no-progress", "--threads", "1", "--info-plane-every", "1",
              "--mine-steps", "20"])
    assert rc == 0
    rows = list(csv.DictReader((out / "info_plane.csv").open()))
    layers = ["enc1", "enc2", "code", "dec1", "dec2"]
    assert [(int(r["epoch"]), r["layer"]) for r in rows] == [(e, name) for e in (0, 1, 2) for name in layers]
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("i_xt", "i_ty"))
    png = (out / "info_plane.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bad_info_plane_flag_exits_2(tmp_path: Path) -> None:
    for bad in (["--info-plane-every", "-1"], ["--info-plane-every", "1.5"], ["--mine-steps", "0"]):
        p = subprocess.run([sys.executable, "-m", "microfarm", "train-encoder", "--data", str(tmp_path), *bad],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, (bad, p.stderr)
        assert "--info-plane-every" in p.stderr or "--mine-steps" in p.stderr
