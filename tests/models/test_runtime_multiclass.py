"""Multi-class supports on the ONNX backend: the same labels as torch (>= 99.5% of pixels), `segment --backend onnx`
with a colour-coded support and --classes, and the torch-free runtime reading it."""

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
from tests.models.test_export_bundle import IMGSZ, session_bundle
from tests.vision.test_predictor_multiclass import scene


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_bundle(tmp_path_factory)


def test_onnx_multiclass_agrees_with_torch(bundle: Path) -> None:
    from models.guided_net import load_guided_net
    from models.onnx_segmenter import OnnxSegmenter
    from vision.predictor import FewShotSegmenter

    net, _ = load_guided_net(bundle.parent / "src" / "segmenter.safetensors")
    shots = [scene(s) for s in range(2)]
    onnx = OnnxSegmenter(bundle, crf="meanfield", imgsz=IMGSZ, scales=[1, 2])
    torch_seg = FewShotSegmenter(net, imgsz=IMGSZ, scales=[1, 2])
    for seg in (onnx, torch_seg):
        seg.set_support([s for s, _ in shots], [m for _, m in shots], classes=["crop", "weed"])
        assert seg.classes == ("crop", "weed")
    assert not onnx.crf_supported and not onnx.crf_on  # crf.onnx takes 2 labels: off for 3
    for seed in (7, 8, 9):
        q = scene(seed)[0]
        (pt, mt), (po, mo) = torch_seg.predict(q), onnx.predict(q)
        assert po.shape == (2, 96, 128) and mo.dtype == np.uint8
        np.testing.assert_allclose(po, pt, atol=1e-4)
        assert (mo == mt).mean() >= 0.995
    for side in onnx.sides:  # a guide per class and input side, the same on both backends
        for k in (1, 2):
            np.testing.assert_allclose(onnx.guide_value(side, cls=k), torch_seg.guide_value(side, cls=k), atol=1e-4)


NO_TORCH = """
import sys
sys.modules["torch"] = None
sys.modules["pybullet"] = None
from microfarm import main
rc = main(["segment", "--support", sys.argv[1], "--classes", "crop=40,170,40", "--classes", "weed=170,200,60",
           "--source", sys.argv[2], "--backend", "onnx", "--bundle", sys.argv[3], "--imgsz", sys.argv[4],
           "--out", sys.argv[5], "--save-overlay"])
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "pybullet") and sys.modules[k] is not None)
assert rc == 0 and not bad, (rc, bad)
print("ok")
"""


def test_segment_onnx_colour_coded_support_without_torch(bundle: Path, tmp_path: Path) -> None:
    """A colour-coded mask (written by OpenCV, so BGR on disk) read with an RGB legend; the CRF is off with a
    warning; masks hold labels 0..2 and the summary the classes and their areas."""
    img, lab = scene(0)
    colours = np.zeros(lab.shape + (3,), np.uint8)
    colours[lab == 1], colours[lab == 2] = (40, 170, 40), (170, 200, 60)
    cv2.imwrite(str(tmp_path / "img.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "mask.png"), cv2.cvtColor(colours, cv2.COLOR_RGB2BGR))
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), cv2.cvtColor(scene(1)[0], cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, f"{tmp_path / 'img.png'}:{tmp_path / 'mask.png'}",
                           str(frames), str(bundle), str(IMGSZ), str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
    assert "the CRF is off" in proc.stderr
    m = cv2.imread(str(out / "masks" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert m.shape == (96, 128) and set(np.unique(m)) <= {0, 1, 2}
    s = json.loads((out / "summary.json").read_text())
    assert s["classes"] == ["crop", "weed"] and set(s["class_fraction"]["a"]) == {"crop", "weed"}
    assert s["crf_gate"]["crf_on"] is False and "labels" in s["crf_gate"]["reason"]
    assert (out / "overlays" / "a.png").exists()


def test_deploy_with_a_multiclass_support(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img, lab = scene(0)
    cv2.imwrite(str(tmp_path / "img.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "mask.png"), lab)  # indexed: gray values 1 and 2
    sup = f"{tmp_path / 'img.png'}:{tmp_path / 'mask.png'}"
    out = tmp_path / "out"
    assert microfarm_main(["deploy", "--bundle", str(bundle), "--task", "segment", "--support", sup, "--classes",
                           "crop=1", "--classes", "weed=2", "--steps", "2", "--save-masks", "--crf", "none",
                           "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["classes"] == ["crop", "weed"] and set(s["class_fraction_mean"]) == {"crop", "weed"}
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert set(rows[0]["class_fraction"]) == {"crop", "weed"}
    assert set(np.unique(cv2.imread(str(out / "masks" / "step_000001.png"), cv2.IMREAD_UNCHANGED))) <= {0, 1, 2}
    capsys.readouterr()
    for extra, message in [(["--classes", "crop"], "--classes 'crop' is not valid"),
                           (["--classes", "crop=1"], "value 2 on"),
                           (["--classes", "crop=1", "--classes", "weed=2", "--classes", "moss=3"], "'moss'")]:
        assert microfarm_main(["deploy", "--bundle", str(bundle), "--task", "segment", "--support", sup, *extra,
                               "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (tmp_path / "bad").exists()
