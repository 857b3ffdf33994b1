"""The mean-field CRF: shapes, normalisation, and its ONNX export matching torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.crf import MeanFieldCRF


def test_meanfield_shapes_and_normalisation():
    for crf in (MeanFieldCRF(window=5, blur=2, bilateral="window").eval(), MeanFieldCRF().eval()):
        p = torch.softmax(torch.randn(2, 3, 37, 51), 1)
        q = crf(p, torch.rand(2, 3, 37, 51) * 255)
        assert q.shape == p.shape
        assert torch.allclose(q.sum(1), torch.ones(2, 37, 51), atol=1e-5)
    assert torch.equal(MeanFieldCRF(iterations=0)(p, torch.zeros(2, 3, 37, 51)), p)


def test_meanfield_rejects_bad_window():
    with pytest.raises(ValueError, match="odd"):
        MeanFieldCRF(window=4)


@pytest.mark.parametrize("mode", ["grid", "window"])
def test_meanfield_exports_to_onnx(tmp_path, mode):
    ort = pytest.importorskip("onnxruntime")
    crf = MeanFieldCRF(bilateral=mode).eval()
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
    crf = MeanFieldCRF(window=5, bilateral="window")
    x = torch.randn(2, 3, 9, 7)
    got = crf._window(torch.nn.functional.pad(x, (2, 2, 2, 2)))  # [N,C,K,h,w], K ordered (dx, dy)
    ref = torch.nn.functional.unfold(x, 5, padding=2).view(2, 3, 5, 5, 9, 7).transpose(2, 3).reshape(2, 3, 25, 9, 7)
    assert torch.equal(got, ref)


@pytest.mark.parametrize("mode", ["grid", "window"])
def test_meanfield_three_labels_export_matches_torch(tmp_path, mode):
    ort = pytest.importorskip("onnxruntime")
    crf = MeanFieldCRF(bilateral=mode).eval()
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


def test_bilateral_grid_approximates_the_exact_bilateral_filter():
    """Splat/blur/slice against the exact normalised 5-D Gaussian filter on a small image (effective std
    ~0.8 of sxy and srgb, see models.bilateral_grid); a constant stays constant (normalised)."""
    from models.bilateral_grid import BilateralGrid

    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 12, 15, generator=g) * 255
    q = torch.rand(1, 1, 12, 15, generator=g)
    grid = BilateralGrid(img, 4.0, 40.0)
    got = grid.filter(q).view(-1)
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(15.0), indexing="ij")
    f = torch.stack([yy / 4, xx / 4, img[0, 0] / 40, img[0, 1] / 40, img[0, 2] / 40], -1).view(-1, 5)
    k = torch.exp(-0.5 * ((f[:, None] - f[None]) ** 2).sum(-1) / 0.8**2)
    ref = (k @ q.view(-1)) / k.sum(1)
    assert float(torch.corrcoef(torch.stack([ref, got]))[0, 1]) > 0.93
    assert float((ref - got).abs().mean()) < 0.06
    assert torch.allclose(grid.filter(torch.full((1, 2, 12, 15), 0.3)), torch.tensor(0.3), atol=1e-6)


def test_grid_crf_labels_each_side_of_a_colour_edge():
    """Two colours meeting at a column; a unary that is unsure near the edge: the grid CRF labels every pixel
    by its colour side."""
    img = torch.zeros(1, 3, 64, 96)
    img[:, 1, :, 48:] = 200.0  # green right half
    img[:, 0, :, :48] = 150.0  # brown-ish left half
    fg = torch.full((1, 1, 64, 96), 0.7)
    fg[..., :48] = 0.3
    fg[..., 40:56] = 0.5  # no evidence near the edge
    p = torch.cat([1 - fg, fg], 1)
    q = MeanFieldCRF()(p, img)[0, 1]
    assert bool((q[:, 48:] > 0.5).all()) and bool((q[:, :48] < 0.5).all())


def test_gaussian_and_pooling_equal_the_box_filters():
    """The fast paths compute the intended filters: the composite kernel equals the three box filters applied
    one after the other away from the borders (at the borders it is normalised once instead of per box), and
    the strided-slice pooling equals avg_pool2d with ceil mode on odd sizes."""
    from models.bilateral_grid import avg_pool

    crf = MeanFieldCRF()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 31, 40, generator=g)
    r = len(crf.gauss_taps) // 2
    fast = crf._gauss_conv(x) / crf._gauss_conv(torch.ones_like(x))
    boxes = x
    for wd in crf.boxes:
        boxes = F.avg_pool2d(boxes, wd, 1, wd // 2, count_include_pad=False)
    assert torch.allclose(fast[..., r:-r, r:-r], boxes[..., r:-r, r:-r], atol=1e-6)
    assert torch.allclose(crf._gauss_conv(torch.full((1, 1, 9, 9), 2.0))[..., r:-r, r:-r], torch.tensor(2.0))
    for h, w in [(31, 40), (30, 41), (7, 7)]:
        y = torch.rand(1, 2, h, w, generator=g)
        ref = F.avg_pool2d(y, 2, 2, ceil_mode=True, count_include_pad=False)
        assert torch.allclose(avg_pool(y, 2), ref, atol=1e-6)


def test_bilateral_grid_workspace_reuse_gives_the_same_result():
    """A grid that reuses a workspace's buffers filters as one with fresh tensors (to rounding), across calls on
    images of different sizes and batch sizes (buffers grow and are re-sliced)."""
    from models.bilateral_grid import BilateralGrid, GridWorkspace

    g = torch.Generator().manual_seed(4)
    ws = GridWorkspace()
    for n, h, w in [(1, 40, 50), (2, 23, 31), (1, 40, 50)]:
        img = torch.rand(n, 3, h, w, generator=g) * 255
        q = torch.rand(n, 1, h, w, generator=g)
        fresh = BilateralGrid(img, 8.0, 13.0).filter(q)
        reused = BilateralGrid(img, 8.0, 13.0, ws).filter(q)
        assert torch.allclose(fresh, reused, rtol=1e-5, atol=1e-7)


def test_bilateral_grid_matmul_blur_equals_the_blur_passes():
    """The ONNX form of the grid blur (banded matrices) computes the eager [1, 2, 1] / 4 passes."""
    from models.bilateral_grid import BilateralGrid

    g = torch.rand(2, 1, 4, 5, 7, 8, 9, generator=torch.Generator().manual_seed(5))
    ref = F.pad(g, (1,) * 10)  # the eager passes run on the padded grid and drop the pads
    for axis in range(2, 7):
        n = ref.shape[axis]
        ref = (ref.narrow(axis, 0, n - 2) + ref.narrow(axis, 2, n - 2)) * 0.25 + ref.narrow(axis, 1, n - 2) * 0.5
    got = BilateralGrid._blur_matmul(g)
    assert got.shape == (2, 1, 4, 5, 7, 8, 9)
    assert torch.allclose(got, ref, atol=1e-6)
