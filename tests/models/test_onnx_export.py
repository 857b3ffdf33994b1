"""ONNX export: checker-valid, dynamic batch, ONNX Runtime equals torch, metadata and manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from models.autoencoder import AutoencoderConfig, ConvAutoencoder
from models.mlp import forward_model, inverse_model
from models.onnx_export import export_onnx, sha256_file
from robot.plots import export_bundle


def test_export_mlp_dynamic_batch(tmp_path: Path) -> None:
    m = forward_model(2, 8, (16, 16))
    e = export_onnx(m, [torch.rand(3, 2)], tmp_path / "f.onnx", ["motor"], ["code"], metadata={"a": [1, 2]})
    assert e["inputs"] == [{"name": "motor", "shape": ["batch", 2], "dtype": "float32"}]
    assert e["sha256"] == sha256_file(tmp_path / "f.onnx") and e["opset"] == 18
    model = onnx.load(str(tmp_path / "f.onnx"))
    assert {p.key: p.value for p in model.metadata_props} == {"a": "[1, 2]"}
    x = np.random.default_rng(0).random((7, 2), dtype=np.float32)
    got = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"]).run(None, {"motor": x})
    with torch.no_grad():
        assert np.allclose(got[0], m(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_export_bundle_matches_torch(tmp_path: Path) -> None:
    ae = ConvAutoencoder(AutoencoderConfig(size=16, channels=(4, 4), code_size=8)).eval()
    fwd, inv = forward_model(2, 8, (16,)).eval(), inverse_model(2, 8, (16,)).eval()
    motor = {"env_id": "x", "env_kwargs": {}, "low": [0.0, 0.0], "high": [1.0, 1.0]}
    manifest = json.loads(export_bundle(tmp_path, ae, fwd, inv, motor).read_text())
    assert manifest["motor"] == motor and manifest["models"]["encoder"]["preprocess"]["scale"] == 1 / 255
    img = torch.rand(5, 1, 16, 16)
    for name, mod, x, inp in (("encoder", ae.encoder, img, "image"), ("forward", fwd, torch.rand(5, 2), "motor"),
                              ("inverse", inv, torch.randn(5, 8), "code")):
        entry = manifest["models"][name]
        assert entry["sha256"] == sha256_file(tmp_path / entry["file"])
        sess = ort.InferenceSession(str(tmp_path / entry["file"]), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            assert np.allclose(sess.run(None, {inp: x.numpy()})[0], mod(x).numpy(), atol=1e-4)
