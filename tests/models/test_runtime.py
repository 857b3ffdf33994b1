"""The on-robot runtime: works with torch and pybullet unimportable, refuses tampered bundles, and the ONNX
backend of `microfarm segment` agrees with the torch backend."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from microfarm import main as microfarm_main
from models.runtime import BundleError, Runtime, select_providers
from tests.conftest import ROOT, write_support
from tests.models.test_export_bundle import IMGSZ, session_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_bundle(tmp_path_factory)


NO_TORCH = """
import sys
sys.modules["torch"] = None      # importing torch or pybullet now raises ImportError
sys.modules["pybullet"] = None
import numpy as np
from models.onnx_segmenter import OnnxSegmenter
from models.runtime import Runtime
rt = Runtime(sys.argv[1])
rng = np.random.default_rng(0)
codes = rt.encode_rgb(rng.integers(0, 255, (2, 80, 80, 3), dtype=np.uint8))
motor = rt.inverse(codes)
assert rt.forward(motor).shape == codes.shape and motor.shape == (2, 2)
seg = OnnxSegmenter(rt, crf="meanfield")
img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
mask = np.zeros((48, 64), np.uint8); mask[10:30, 20:40] = 1
seg.set_support([img], [mask])
probs, m = seg.predict(img)
assert probs.shape == (48, 64) and m.dtype == np.uint8
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "pybullet") and sys.modules[k] is not None)
assert not bad, bad
print("ok", rt.providers)
"""


def test_runtime_runs_with_torch_and_pybullet_unimportable(bundle: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(bundle)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")


def _copy(bundle: Path, tmp: Path) -> Path:
    dst = tmp / "bundle"
    shutil.copytree(bundle, dst)
    return dst


def test_tampered_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    b = _copy(bundle, tmp_path)
    data = bytearray((b / "segment.onnx").read_bytes())
    data[-100] ^= 0xFF
    (b / "segment.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        Runtime(b, warmup=False)
    (b / "segment.onnx").write_bytes((bundle / "segment.onnx").read_bytes())
    (b / "crf.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        Runtime(b, warmup=False)
    shutil.copy(bundle / "crf.onnx", b / "crf.onnx")
    man = json.loads((b / "manifest.json").read_text())
    man["format_version"] = "99"
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="format"):
        Runtime(b, warmup=False)
    # a valid model swapped in with a matching hash but another contract is refused too
    man["format_version"] = "1"
    guide, segment = man["models"]["guide"], man["models"]["segment"]
    guide["file"], guide["sha256"] = "segment.onnx", segment["sha256"]
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(BundleError, match="contract"):
        Runtime(b, warmup=False)
    with pytest.raises(BundleError, match="not an ONNX bundle"):
        Runtime(tmp_path / "nothing")


def test_providers_order_and_refusal() -> None:
    import onnxruntime as ort

    auto = select_providers()
    assert auto[-1] == "CPUExecutionProvider" and all(p in ort.get_available_providers() for p in auto)
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BundleError, match="not available"):
            select_providers(["cuda"])


def test_crf_session_is_capped_at_one_thread_and_gives_the_same_result(bundle: Path) -> None:
    capped = Runtime(bundle, providers="cpu", threads=2, warmup=False)
    free = Runtime(bundle, providers="cpu", threads=2, warmup=False, model_threads={})
    opts = {n: s.get_session_options().intra_op_num_threads for n, s in capped.sessions.items()}
    assert opts.pop("crf") == 1 and capped.threads["crf"] == 1
    assert set(opts.values()) == {2}, opts
    assert free.sessions["crf"].get_session_options().intra_op_num_threads == 2
    assert Runtime(bundle, providers="cpu", warmup=False).threads["crf"] == 1      # ORT's default elsewhere
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 2, IMGSZ, IMGSZ)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    image = rng.uniform(0, 255, (1, 3, IMGSZ, IMGSZ)).astype(np.float32)
    np.testing.assert_allclose(capped.crf(probs, image), free.crf(probs, image), atol=1e-5)


def test_segment_onnx_backend_agrees_with_torch(bundle: Path, tmp_path: Path) -> None:
    d = tmp_path
    weights = bundle.parent / "src" / "segmenter.safetensors"
    common = ["--support", write_support(d), "--source", "sim", "--imgsz", str(IMGSZ),
              "--max-frames", "4", "--crf", "meanfield"]
    assert microfarm_main(["segment", *common, "--weights", str(weights), "--out", str(d / "torch")]) == 0
    assert microfarm_main(["segment", *common, "--backend", "onnx", "--bundle", str(bundle),
                           "--out", str(d / "onnx")]) == 0
    names = sorted(p.name for p in (d / "torch" / "masks").iterdir())
    assert len(names) == 4 and names == sorted(p.name for p in (d / "onnx" / "masks").iterdir())
    agree = [(cv2.imread(str(d / "torch" / "masks" / n), 0) == cv2.imread(str(d / "onnx" / "masks" / n), 0)).mean()
             for n in names]
    assert min(agree) >= 0.995, agree
    gates = [json.loads((d / b / "summary.json").read_text())["crf_gate"] for b in ("torch", "onnx")]
    assert gates[0]["crf_on"] == gates[1]["crf_on"]  # the same CRF gate decision on the same support
    assert gates[0]["support_iou_with_crf"] == pytest.approx(gates[1]["support_iou_with_crf"], abs=0.01)
    # the CRF parameters are baked into crf.onnx: a different --crf-* value is refused, not silently ignored
    assert microfarm_main(["segment", *common, "--backend", "onnx", "--bundle", str(bundle), "--crf-iterations",
                           "9", "--out", str(d / "onnx2")]) == 2
    assert not (d / "onnx2" / "masks").exists()


def test_onnx_segmenter_scales_agree_with_torch(bundle: Path) -> None:
    """--scales 1 2 on both backends: a guide per input side, the same averaged probabilities."""
    from models.guided_net import load_guided_net
    from models.onnx_segmenter import OnnxSegmenter
    from vision.predictor import FewShotSegmenter

    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 20:40] = 1
    frame = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    net, _ = load_guided_net(bundle.parent / "src" / "segmenter.safetensors")
    segs = {"onnx": OnnxSegmenter(bundle, imgsz=IMGSZ, scales=[1, 2], colour_prior=0),
            "torch": FewShotSegmenter(net, imgsz=IMGSZ, scales=[1, 2], colour_prior=0),
            "small": OnnxSegmenter(bundle, imgsz=IMGSZ, colour_prior=0),
            "large": OnnxSegmenter(bundle, imgsz=2 * IMGSZ, colour_prior=0)}
    for seg in segs.values():
        seg.set_support([img], [mask])
    assert segs["onnx"].sides == (IMGSZ, 2 * IMGSZ)
    p = {k: seg.predict(frame)[0] for k, seg in segs.items()}
    np.testing.assert_allclose(p["onnx"], p["torch"], atol=1e-4)
    assert np.abs(p["small"] - p["large"]).max() > 1e-4  # the two sides differ (20x the tolerance below)
    np.testing.assert_allclose(p["onnx"], (p["small"] + p["large"]) / 2, atol=5e-6)
    with pytest.raises(BundleError, match="--scales"):
        OnnxSegmenter(bundle, imgsz=IMGSZ, scales=[0])
    rt = Runtime(bundle)
    entry = json.loads(json.dumps(rt.entry("segment")))
    for inp in entry["inputs"]:  # as a bundle exported with --fixed-shape records it
        inp["shape"] = [1, 3, IMGSZ, IMGSZ] if inp["name"] == "query" else inp["shape"]
    rt.manifest["models"]["segment"] = entry
    assert OnnxSegmenter(rt, imgsz=IMGSZ).sides == (IMGSZ,)
    with pytest.raises(BundleError, match="--fixed-shape"):
        OnnxSegmenter(rt, imgsz=IMGSZ, scales=[1, 2])


def test_onnx_segmenter_fitted_cues_agree_with_torch(bundle: Path) -> None:
    """--fusion fit on both backends (2 shots: leave-one-out network features): the same fitted weights, the same
    probabilities."""
    from models.guided_net import load_guided_net
    from models.onnx_segmenter import OnnxSegmenter
    from vision.predictor import FewShotSegmenter

    rng = np.random.default_rng(5)
    imgs, masks = [], []
    for _ in range(3):
        img = rng.integers(60, 140, (48, 64, 3), dtype=np.uint8)
        m = np.zeros((48, 64), np.uint8)
        y, x = rng.integers(5, 30, 2)
        m[y:y + 14, x:x + 20] = 1
        img[m > 0] = (50, 160, 40)
        imgs.append(img)
        masks.append(m)
    net, _ = load_guided_net(bundle.parent / "src" / "segmenter.safetensors")
    segs = {"onnx": OnnxSegmenter(bundle, imgsz=IMGSZ, fusion="fit"),
            "torch": FewShotSegmenter(net, imgsz=IMGSZ, fusion="fit")}
    for seg in segs.values():
        seg.set_support(imgs[:2], masks[:2])
    p = {k: seg.predict(imgs[2])[0] for k, seg in segs.items()}
    np.testing.assert_allclose(p["onnx"], p["torch"], atol=1e-4)
    w = [seg._cues[0].weights for seg in segs.values()]  # type: ignore[index]
    assert (w[0] is None) == (w[1] is None)
    if w[0] is not None:
        np.testing.assert_allclose(w[0], w[1], atol=1e-3)
    assert ((p["torch"] >= 0.5) == (masks[2] > 0)).mean() > 0.9  # the green patch found on an untrained net


def test_segment_onnx_backend_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cv2.imwrite(str(tmp_path / "i.png"), np.zeros((8, 8, 3), np.uint8))
    m = np.zeros((8, 8), np.uint8)
    m[:, 4:] = 255
    cv2.imwrite(str(tmp_path / "m.png"), m)
    sup = f"{tmp_path / 'i.png'}:{tmp_path / 'm.png'}"
    assert microfarm_main(["segment", "--support", sup, "--source", "sim", "--backend", "onnx"]) == 2
    assert "needs --bundle" in capsys.readouterr().err
    assert microfarm_main(["segment", "--support", sup, "--source", "sim", "--backend", "onnx", "--bundle",
                           str(tmp_path)]) == 2
    assert "not an ONNX bundle" in capsys.readouterr().err


def test_segment_onnx_backend_without_crf_model(bundle: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A bundle exported with --no-crf runs without the CRF (a warning) unless --crf meanfield is asked for, which
    exits 2 saying so."""
    b = _copy(bundle, tmp_path)
    (b / "crf.onnx").unlink()
    man = json.loads((b / "manifest.json").read_text())
    del man["models"]["crf"]
    (b / "manifest.json").write_text(json.dumps(man))
    common = ["segment", "--support", write_support(tmp_path), "--source", "sim", "--imgsz", str(IMGSZ),
              "--max-frames", "1", "--backend", "onnx", "--bundle", str(b)]
    with pytest.warns(UserWarning, match="no crf.onnx"):
        assert microfarm_main([*common, "--out", str(tmp_path / "o1")]) == 0
    assert json.loads((tmp_path / "o1" / "summary.json").read_text())["crf"] == "none"
    capsys.readouterr()
    assert microfarm_main([*common, "--crf", "meanfield", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "has no crf model" in err and "--crf none" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o2").exists()


def test_segment_onnx_backend_checks_only_the_crf_flags_given(bundle: Path, tmp_path: Path) -> None:
    """A bundle whose crf.onnx has other parameters runs with the default flags; a --crf-* flag that differs
    from the bundle's exits 2."""
    b = _copy(bundle, tmp_path)
    man = json.loads((b / "manifest.json").read_text())
    man["models"]["crf"]["config"]["iterations"] = 9  # as if exported with --crf-iterations 9
    (b / "manifest.json").write_text(json.dumps(man))
    common = ["segment", "--support", write_support(tmp_path), "--source", "sim", "--imgsz", str(IMGSZ),
              "--max-frames", "1", "--backend", "onnx", "--bundle", str(b)]
    assert microfarm_main([*common, "--out", str(tmp_path / "o1")]) == 0
    assert microfarm_main([*common, "--crf-iterations", "5", "--out", str(tmp_path / "o2")]) == 2
    assert microfarm_main([*common, "--crf-iterations", "9", "--out", str(tmp_path / "o3")]) == 0


SEGMENT_NO_TORCH = """
import sys
sys.modules["torch"] = None
sys.modules["pybullet"] = None
from microfarm import main
rc = main(["segment", "--support", sys.argv[1], "--source", sys.argv[2], "--backend", "onnx", "--bundle", sys.argv[3],
           "--imgsz", sys.argv[4], "--crf", "meanfield", "--out", sys.argv[5]])
bad = sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "pybullet") and sys.modules[k] is not None)
assert rc == 0 and not bad, (rc, bad)
print("ok")
"""


def test_segment_onnx_backend_runs_without_torch(bundle: Path, tmp_path: Path) -> None:
    img = np.zeros((40, 40, 3), np.uint8)
    img[:, 20:] = (30, 160, 40)
    mask = np.zeros((40, 40), np.uint8)
    mask[:, 20:] = 255
    cv2.imwrite(str(tmp_path / "img.png"), img)
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a.png"), img)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", SEGMENT_NO_TORCH, f"{tmp_path / 'img.png'}:{tmp_path / 'mask.png'}",
                           str(frames), str(bundle), str(IMGSZ), str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
    assert cv2.imread(str(out / "masks" / "a.png"), cv2.IMREAD_UNCHANGED).shape == (40, 40)
