"""`microfarm render`: tiny renders of both tasks, skipping finished frames, and bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from microfarm import main as microfarm_main
from tests.conftest import ROOT


def test_features_render(tmp_path: Path) -> None:
    out = tmp_path / "feat"
    assert microfarm_main(["render", "--task", "features", "--n", "9", "--grid", "--size", "16", "--out",
                           str(out)]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["task"] == "features" and index["motor_dim"] == 2 and len(index["frames"]) == 9
    data = np.load(out / "features.npz")
    assert data["images"].shape == (9, 16, 16, 3) and data["images"].dtype == np.uint8
    assert data["motor"].shape == (9, 2) and data["motor"].dtype == np.float32
    np.testing.assert_allclose(sorted(set(data["motor"][:, 0].round(3))), [0.0, 0.5, 1.0])
    assert len({img.tobytes() for img in data["images"]}) > 1


def test_segmentation_render_and_rerun_skips_finished_frames(tmp_path: Path) -> None:
    out = tmp_path / "seg"
    args = ["render", "--task", "segmentation", "--n", "4", "--size", "32", "--views-per-layout", "2",
            "--out", str(out)]
    assert microfarm_main(args) == 0
    index = json.loads((out / "index.json").read_text())
    assert [f["stem"] for f in index["frames"]] == ["000000", "000001", "000002", "000003"]
    assert len(index["species"]) >= 10 and len(index["folds"]) == 4
    assert {s["kind"] for s in index["species"]} == {"crop", "weed"}
    frame = index["frames"][0]
    species = cv2.imread(str(out / frame["species"]), cv2.IMREAD_UNCHANGED)
    instance = cv2.imread(str(out / frame["instance"]), cv2.IMREAD_UNCHANGED)
    assert species.dtype == np.uint8 and instance.dtype == np.uint16 and species.shape == (32, 32)
    assert np.array_equal(species > 0, instance > 0)
    counts = {str(k): int(c) for k, c in zip(*np.unique(species, return_counts=True), strict=True) if k}
    assert frame["species_pixels"] == counts
    mtime = (out / frame["rgb"]).stat().st_mtime_ns
    (out / "rgb" / "000003.png").unlink()
    assert microfarm_main(args) == 0
    assert (out / frame["rgb"]).stat().st_mtime_ns == mtime  # finished frame skipped
    assert (out / "rgb" / "000003.png").exists()  # missing frame rendered again
    assert json.loads((out / "index.json").read_text())["frames"] == index["frames"]


def test_workers_give_the_same_frames(tmp_path: Path) -> None:
    base = ["render", "--task", "features", "--n", "4", "--size", "16", "--seed", "3"]
    assert microfarm_main([*base, "--out", str(tmp_path / "a")]) == 0
    assert microfarm_main([*base, "--workers", "2", "--out", str(tmp_path / "b")]) == 0
    a, b = np.load(tmp_path / "a" / "features.npz"), np.load(tmp_path / "b" / "features.npz")
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["motor"], b["motor"])


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "pictures"], "choose one of: features, segmentation"),
    (["--task", "features", "--arm", "crane"], "choose one of: gantry, arm"),
    (["--task", "features", "--n", "0"], "--n must be at least 1"),
    (["--n", "3"], "--task is required"),
    (["--task", "features", "--nn", "3"], "did you mean --n"),
    (["--task", "features", "--out", "{file}/sub"], "pass a writable --out"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = [a.replace("{file}", str(blocker)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "microfarm", "render", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
