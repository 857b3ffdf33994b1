"""The mean-field CRF: shapes, normalisation, and its ONNX export matching torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.crf import MeanFieldCRF


def test_meanfield_shapes_and_normalisation():
    crf = MeanFieldCRF(window=5, blur=2).eval()
    p = torch.softmax(torch.randn(2, 3, 37, 51), 1)
    q = crf(p, torch.rand(2, 3, 37, 51) * 255)
    assert q.shape == p.shape
    assert torch.allclose(q.sum(1), torch.ones(2, 37, 51), atol=1e-5)
    assert torch.equal(MeanFieldCRF(iterations=0)(p, torch.zeros(2, 3, 37, 51)), p)


def test_meanfield_rejects_bad_window():
    with pytest.raises(ValueError, match="odd"):
        MeanFieldCRF(window=4)


def test_meanfield_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    crf = MeanFieldCRF().eval()
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(2, 2, 70, 90, generator=g), 1)
    im = torch.rand(2, 3, 70, 90, generator=g) * 255
    path = tmp_path / "crf.onnx"
    dyn = {"probs": {0: "n", 2: "h", 3: "w"}, "image": {0: "n", 2: "h", 3: "w"}}
    torch.onnx.export(crf, (p, im), str(path), dynamo=True, opset_version=18, external_data=False,
                      input_names=["probs", "image"], output_names=["refined"], dynamic_shapes=dyn)
    import onnx

    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in [(2, 70, 90), (1, 123, 77)]:
        p = torch.softmax(torch.randn(n, 2, h, w, generator=g), 1)
        im = torch.rand(n, 3, h, w, generator=g) * 255
        with torch.no_grad():
            ref = crf(p, im).numpy()
        got = sess.run(None, {"probs": p.numpy(), "image": im.numpy()})[0]
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)


def test_window_matches_unfold():
    """The conv + row-gather window is F.unfold's (zero padded), neighbours column-offset major."""
    crf = MeanFieldCRF(window=5)
    x = torch.randn(2, 3, 9, 7)
    got = crf._window(torch.nn.functional.pad(x, (2, 2, 2, 2)))  # [N,C,K,h,w], K ordered (dx, dy)
    ref = torch.nn.functional.unfold(x, 5, padding=2).view(2, 3, 5, 5, 9, 7).transpose(2, 3).reshape(2, 3, 25, 9, 7)
    assert torch.equal(got, ref)


def test_meanfield_three_labels_export_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    crf = MeanFieldCRF().eval()
    g = torch.Generator().manual_seed(1)
    p = torch.softmax(torch.randn(2, 3, 48, 64, generator=g) * 2, 1)
    im = torch.rand(2, 3, 48, 64, generator=g) * 255
    path = tmp_path / "crf3.onnx"
    dyn = {"probs": {0: "n", 2: "h", 3: "w"}, "image": {0: "n", 2: "h", 3: "w"}}
    torch.onnx.export(crf, (p, im), str(path), dynamo=True, opset_version=18, external_data=False,
                      input_names=["probs", "image"], output_names=["refined"], dynamic_shapes=dyn)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, h, w in [(2, 48, 64), (1, 61, 45)]:
        p = torch.softmax(torch.randn(n, 3, h, w, generator=g) * 2, 1)
        im = torch.rand(n, 3, h, w, generator=g) * 255
        with torch.no_grad():
            ref = crf(p, im).numpy()
        got = sess.run(None, {"probs": p.numpy(), "image": im.numpy()})[0]
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
