"""`microfarm export`: a bundle of six checked models, manifest + metadata contract, fp16/int8 by task metric."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from microfarm import main as microfarm_main
from models.export_sources import write_demo_sources
from models.onnx_export import sha256_file
from models.runtime import CONTRACT_KEY, MODEL_NAMES, Runtime
from robot.export_cli import ExportConfig, export_bundle

IMGSZ = 64


def session_bundle(factory: pytest.TempPathFactory, variants: bool = True) -> Path:
    """One tiny bundle per test session (built on first use): untrained tiny models, imgsz 64, fp16 + int8."""
    base = factory.getbasetemp() / "onnx_bundle"
    bundle = base / "bundle"
    if not (bundle / "manifest.json").is_file():
        run, seg = write_demo_sources(base / "src", tiny=True)
        export_bundle(ExportConfig(out=bundle, explore_run=run, segmenter=seg, imgsz=IMGSZ, fp16=variants,
                                   int8=variants, calib=4, eval_frames=6), log=lambda *a: None)
    return bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_bundle(tmp_path_factory)


def test_manifest_lists_every_model_with_hash_and_dynamic_axes(bundle: Path) -> None:
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["format_version"] == "1" and set(man["models"]) == set(MODEL_NAMES)
    assert man["versions"]["opset"] == 18 and len(man["goals"]) == 9 and man["motor"]["arm"] == "gantry"
    shapes = {n: {i["name"]: i["shape"] for i in e["inputs"] + e["outputs"]} for n, e in man["models"].items()}
    assert shapes["guide"] == {"images": ["shots", 3, "height", "width"], "masks": ["shots", 1, "height", "width"],
                               "guide": [1, shapes["segment"]["guide"][1]]}
    assert shapes["segment"]["logits"] == ["batch", 2, "height", "width"]
    assert shapes["crf"]["refined"] == ["batch", 2, "height", "width"] and shapes["encoder"]["image"][0] == "batch"
    for name, e in man["models"].items():
        path = bundle / e["file"]
        assert e["sha256"] == sha256_file(path) and e["opset"] == 18
        assert e["max_abs_diff_vs_torch"] <= 1e-3 and e["parity_sets"] >= 2, name
        onnx.checker.check_model(str(path), full_check=True)
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        contract = json.loads(meta[CONTRACT_KEY])
        assert contract["inputs"] == e["inputs"] and contract["outputs"] == e["outputs"]
        assert contract["versions"]["bundle_format"] == "1" and "preprocess" in contract and "config" in contract
    assert man["models"]["guide"]["preprocess"]["size"] == IMGSZ
    assert man["models"]["encoder"]["training"]["config"]["arm"] == "gantry"


def test_runtime_round_trips_every_model_against_torch(bundle: Path, tmp_path: Path) -> None:
    from models.crf import MeanFieldCRF
    from models.guided_net import load_guided_net
    from models.weights import load_into, read_metadata

    rt = Runtime(bundle)
    src = bundle.parent / "src"
    net, _ = load_guided_net(src / "segmenter.safetensors")
    rng = np.random.default_rng(3)
    imgs = rng.random((3, 3, 48, 80), dtype=np.float32)
    masks = (rng.random((3, 1, 48, 80)) > 0.5).astype(np.float32)
    q = rng.random((2, 3, 96, 64), dtype=np.float32)
    with torch.no_grad():
        g = net.guide(torch.from_numpy(imgs), torch.from_numpy(masks))
        logits = net.segment(torch.from_numpy(q), g)
        probs = torch.softmax(logits, 1)
        refined = MeanFieldCRF()(probs, torch.from_numpy(q) * 255)
    np.testing.assert_allclose(rt.guide(imgs, masks), g.numpy(), atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(rt.segment(q, g.numpy()), logits.numpy(), atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(rt.crf(probs.numpy(), q * 255), refined.numpy(), atol=1e-4, rtol=1e-3)
    from models.mlp import MLP, MLPConfig

    inv = MLP(MLPConfig.from_dict(read_metadata(src / "explore/weights/inverse.safetensors")["config"]))
    load_into(inv, src / "explore/weights/inverse.safetensors")
    codes = rng.normal(size=(5, 8)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(rt.inverse(codes), inv(torch.from_numpy(codes)).numpy(), atol=1e-4, rtol=1e-3)


def test_fp16_int8_variants_judged_by_task_metric(bundle: Path) -> None:
    man = json.loads((bundle / "manifest.json").read_text())
    q = man["quantization"]
    assert {"miou", "reach_error", "forward_error"} <= set(q["fp32"])
    for kind in ("fp16", "int8"):
        for name in q[kind]["kept"]:
            v = man["models"][name]["variants"][kind]
            assert v["sha256"] == sha256_file(bundle / v["file"])
        assert "crf" not in q["int8"]["kept"] + q["int8"]["rejected"]
    for kind in ("fp16", "int8"):
        rt = Runtime(bundle, precision=kind)
        out = rt.segment(np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32),
                         np.zeros((1, rt.entry("segment")["inputs"][1]["shape"][1]), np.float32))
        assert out.shape == (1, 2, 64, 64) and out.dtype == np.float32


@pytest.mark.parametrize(("args", "message"), [
    (["--segmenter", "/nonexistent/seg.safetensors"], "no segmenter weights"),
    (["--no-segmentation", "--explore-run", "/nonexistent/run"], "is not a folder"),
    (["--no-segmentation", "--imgsz", "50"], "multiple of 16"),
    (["--fp17"], "did you mean --fp16"),
])
def test_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert microfarm_main(["export", "--out", str(tmp_path / "b"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
