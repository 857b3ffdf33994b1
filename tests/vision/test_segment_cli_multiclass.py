"""`microfarm segment` with a multi-class support: label PNGs, per-class areas, a colour per class in the
overlays; bad multi-class input exits 2 with one line and keeps what was written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from microfarm import main as microfarm_main
from models.labels import PALETTE
from tests.conftest import ROOT
from tests.vision.test_predictor_multiclass import scene


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """img.png, an indexed mask (labels.png: 1 and 2), a colour-coded one (colours.png: green = crop, red = weed),
    and frames/ with two frames."""
    d = tmp_path_factory.mktemp("mc")
    img, lab = scene(0)
    cv2.imwrite(str(d / "img.png"), _bgr(img))
    cv2.imwrite(str(d / "labels.png"), lab)
    cv2.imwrite(str(d / "crop_only.png"), np.where(lab == 2, 0, lab).astype(np.uint8))
    colours = np.zeros(lab.shape + (3,), np.uint8)
    colours[lab == 1], colours[lab == 2] = (0, 255, 0), (255, 0, 0)
    cv2.imwrite(str(d / "colours.png"), _bgr(colours))
    (d / "frames").mkdir()
    for s in (1, 2):
        cv2.imwrite(str(d / "frames" / f"f{s}.png"), _bgr(scene(s)[0]))
    return d


def test_label_pngs_per_class_areas_and_overlays(tmp_path: Path, weights: Path, files: Path) -> None:
    out = tmp_path / "out"
    assert microfarm_main(["segment", "--support", f"{files / 'img.png'}:{files / 'colours.png'}", "--classes",
                           "crop=0,255,0", "--classes", "weed=255,0,0", "--source", str(files / "frames"),
                           "--weights", str(weights), "--imgsz", "32", "--crf", "dense", "--colour-prior", "1",
                           "--save-overlay", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["classes"] == ["crop", "weed"] and set(s["class_fraction"]) == {"f1", "f2"}
    for name in ("f1", "f2"):
        m = cv2.imread(str(out / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert m.shape == (96, 128) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1, 2}
        area = s["class_fraction"][name]
        assert area == {"crop": round(float((m == 1).mean()), 5), "weed": round(float((m == 2).mean()), 5)}
        assert s["foreground_fraction"][name] == pytest.approx(area["crop"] + area["weed"], abs=2e-5)
    # the colour prior alone (W = 1) finds both plants of the scene; the overlay tints each in its palette colour
    m = cv2.imread(str(out / "masks" / "f1.png"), cv2.IMREAD_UNCHANGED)
    truth = scene(1)[1]
    for k in (1, 2):
        assert ((m == k) & (truth == k)).sum() / ((m == k) | (truth == k)).sum() > 0.8
    ov = cv2.cvtColor(cv2.imread(str(out / "overlays" / "f1.png")), cv2.COLOR_BGR2RGB).astype(int)
    frame = scene(1)[0].astype(int)
    for k in (1, 2):
        inner = cv2.erode((m == k).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        want = (0.55 * frame[inner] + 0.45 * np.asarray(PALETTE[k - 1])).astype(int)
        assert np.abs(ov[inner] - want).max() <= 1
    # the same support as an indexed mask, names from --classes NAME=V: the same labels
    out2 = tmp_path / "out2"
    assert microfarm_main(["segment", "--support", f"{files / 'img.png'}:{files / 'labels.png'}", "--classes",
                           "crop=1", "--classes", "weed=2", "--source", str(files / "frames"), "--weights",
                           str(weights), "--imgsz", "32", "--crf", "dense", "--colour-prior", "1",
                           "--out", str(out2)]) == 0
    assert np.array_equal(cv2.imread(str(out2 / "masks" / "f1.png"), cv2.IMREAD_UNCHANGED), m)


@pytest.mark.parametrize(("support", "extra", "message"), [
    ("colours.png", ["--classes", "crop=0,255,0"], "colour 255,0,0 on 900 pixels, which the classes legend"),
    ("labels.png", ["--classes", "crop=1"], "value 2 on 900 pixels"),
    ("colours.png", [], "needs a legend, --classes NAME=R,G,B"),
    ("crop_only.png", ["--classes", "crop=1", "--classes", "weed=2"], "class 'weed' (value 2) has no pixel"),
    ("labels.png", ["--classes", "crop=0,255"], "--classes 'crop=0,255' is not valid: give NAME=R,G,B"),
    ("labels.png", ["--classes", "crop=1", "--classes", "crop=2"], "the name crop is given twice"),
])
def test_bad_multiclass_input_exits_2_with_one_line(tmp_path: Path, weights: Path, files: Path, support: str,
                                                    extra: list[str], message: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    proc = subprocess.run([sys.executable, "-m", "microfarm", "segment", "--support",
                           f"{files / 'img.png'}:{files / support}", *extra, "--source", str(files / "frames"),
                           "--weights", str(weights), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, lines
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "earlier result"
