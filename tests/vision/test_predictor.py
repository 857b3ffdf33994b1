"""FewShotSegmenter: shapes and dtypes at the frame's size, input conversions, support handling, CRFs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vision
from microfarm import UsageError
from models.guided_net import GuidedNet, GuidedNetConfig, save_guided_net
from vision.predictor import FewShotSegmenter, SupportError, to_mask, to_rgb8


@pytest.fixture(scope="module")
def net() -> GuidedNet:
    torch.manual_seed(0)
    return GuidedNet(GuidedNetConfig(backbone="compact", hidden=16)).eval()


def _pair(h: int = 60, w: int = 80, seed: int = 0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: h // 2, w // 4: w // 2] = 255
    return img, mask


@pytest.mark.parametrize("crf", ["none", "dense", "meanfield"])
def test_predict_shapes_and_ranges(net, crf):
    seg = vision.FewShotSegmenter(net, crf=crf, imgsz=64)
    seg.set_support(*zip(_pair(), _pair(seed=1), strict=True))
    assert seg.shots == 2
    probs, mask = seg.predict(_pair(45, 70, seed=2)[0])
    assert probs.shape == (45, 70) and probs.dtype == np.float32
    assert mask.shape == (45, 70) and mask.dtype == np.uint8
    assert probs.min() >= 0 and probs.max() <= 1 and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, probs >= 0.5)


def test_add_support_equals_set_support(net):
    pairs = [_pair(seed=s) for s in range(3)]
    a = FewShotSegmenter(net, imgsz=64)
    a.set_support([p[0] for p in pairs], [p[1] for p in pairs])
    b = FewShotSegmenter(net, imgsz=64)
    b.set_support([pairs[0][0]], [pairs[0][1]])
    b.add_support(*pairs[1])
    b.add_support(*pairs[2])
    frame = _pair(seed=9)[0]
    np.testing.assert_allclose(a.predict(frame)[0], b.predict(frame)[0], atol=1e-5)
    a.set_support([pairs[0][0]], [pairs[0][1]])  # replaces, does not add
    assert a.shots == 1


def test_input_conversions(net):
    img, mask = _pair()
    seg = FewShotSegmenter(net, imgsz=64)
    seg.set_support([img[..., 0]], [np.repeat(mask[..., None], 3, 2)])  # gray image, colour mask
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], 2)
    for frame in (img, img[..., 0], img[..., :1], rgba, img.astype(np.uint16) * 257):
        probs, m = seg.predict(frame)
        assert probs.shape == (60, 80) and m.shape == (60, 80)
    assert np.array_equal(to_rgb8(img.astype(np.uint16) * 257), img)
    assert np.array_equal(to_rgb8(rgba), img)
    assert to_rgb8(img[..., 0]).shape == (60, 80, 3)
    assert to_mask(np.dstack([mask * 0, mask, mask * 0])).sum() == (mask > 0).sum()


def test_bad_support_and_no_support(net):
    img, mask = _pair()
    seg = FewShotSegmenter(net, imgsz=64)
    with pytest.raises(RuntimeError, match="support"):
        seg.predict(img)
    with pytest.raises(SupportError, match="empty"):
        seg.add_support(img, np.zeros_like(mask))
    with pytest.raises(SupportError, match="differs"):
        seg.add_support(img, mask[:-1])
    with pytest.raises(SupportError, match="as many masks"):
        seg.set_support([img, img], [mask])
    with pytest.raises(UsageError, match="crf"):
        FewShotSegmenter(net, crf="fancy")  # type: ignore[arg-type]


def test_loads_weights_file(net, tmp_path):
    path = save_guided_net(net, tmp_path / "seg.safetensors")
    img, mask = _pair()
    a, b = FewShotSegmenter(net, imgsz=64), FewShotSegmenter(path, imgsz=64)
    a.set_support([img], [mask])
    b.set_support([img], [mask])
    np.testing.assert_allclose(a.predict(img)[0], b.predict(img)[0], atol=1e-6)


def test_colour_prior_blends_the_support_colour_into_the_network(net):
    """--fusion blend: predict = (1-W) network + W colour histogram; with an untrained network the support's
    colour alone finds a red disc on soil that the network misses, and adding the shot later equals set_support
    (also for the default --fusion fit, whose weights are fitted on the shots kept)."""
    from models.colour_prior import ColourHistogram
    from vision.metrics import binary_iou

    def scene(seed: int):
        rng = np.random.default_rng(seed)
        img = np.clip(rng.normal((115, 85, 55), 12, (64, 80, 3)), 0, 255).astype(np.uint8)
        yy, xx = np.mgrid[:64, :80]
        disc = (xx - rng.integers(25, 55)) ** 2 + (yy - rng.integers(20, 44)) ** 2 <= 14 ** 2
        img[disc] = np.clip(rng.normal((200, 40, 40), 10, (int(disc.sum()), 3)), 0, 255).astype(np.uint8)
        return img, disc

    (s0, m0), (s1, m1), (q, truth) = scene(0), scene(1), scene(2)
    alone = FewShotSegmenter(net, imgsz=64, colour_prior=0.0)
    blended = FewShotSegmenter(net, imgsz=64, colour_prior=0.5, fusion="blend")
    for seg in (alone, blended):
        seg.set_support([s0, s1], [m0, m1])
    hist = ColourHistogram().fit([s0, s1], [m0, m1]).prob(q)
    fg_alone, fg = alone.predict(q)[0], blended.predict(q)[0]
    np.testing.assert_allclose(fg, 0.5 * fg_alone + 0.5 * hist, atol=1e-6)
    assert binary_iou(fg >= 0.5, truth) > 0.8 > binary_iou(fg_alone >= 0.5, truth)
    later = FewShotSegmenter(net, imgsz=64, fusion="blend")
    later.set_support([s0], [m0])
    later.add_support(s1, m1)
    np.testing.assert_allclose(later.predict(q)[0], fg, atol=1e-6)
    fit, fit_later = FewShotSegmenter(net, imgsz=64), FewShotSegmenter(net, imgsz=64)
    fit.set_support([s0, s1], [m0, m1])
    fit_later.set_support([s0], [m0])
    assert binary_iou(fit_later.predict(q)[1] > 0, truth) > 0.8  # fitted on one shot
    fit_later.add_support(s1, m1)  # refitted on both
    np.testing.assert_allclose(fit_later.predict(q)[0], fit.predict(q)[0], atol=1e-6)
    assert binary_iou(fit.predict(q)[1] > 0, truth) > 0.8
    with pytest.raises(UsageError, match="colour_prior"):
        FewShotSegmenter(net, colour_prior=1.5)


@pytest.mark.parametrize("crf", ["dense", "meanfield"])
def test_crf_gate_skips_a_crf_that_hurts_the_support(net, crf):
    pairs = [_pair(seed=s) for s in range(2)]
    seg = FewShotSegmenter(net, crf=crf, imgsz=64)
    seg.set_support([p[0] for p in pairs], [p[1] for p in pairs])
    frame = _pair(seed=5)[0]
    assert seg.gate.last is None
    probs = seg.predict(frame)[0]
    rep = seg.gate.report()
    assert set(rep) == {"enabled", "support_iou_without_crf", "support_iou_with_crf", "crf_on"}
    fused = seg.fused(frame)
    want = seg.refine(fused, frame) if rep["crf_on"] else fused
    np.testing.assert_allclose(probs, np.clip(want, 0, 1), atol=1e-6)
    # a CRF that erases everything lowers the support's IoU (here: of a network that marks everything): the gate
    # turns it off and predict skips it
    seg.fused = lambda rgb: np.full(rgb.shape[:2], 0.9, np.float32)  # type: ignore[method-assign]
    seg.refine = lambda fg, rgb: np.zeros_like(fg)  # type: ignore[method-assign]
    seg.add_support(*_pair(seed=3))  # a support change: the check runs again
    assert not seg.crf_on
    np.testing.assert_allclose(seg.predict(frame)[0], seg.fused(frame), atol=1e-6)
    assert seg.gate.report()["support_iou_with_crf"] == 0.0
    # without the gate the CRF always runs
    off = FewShotSegmenter(net, crf=crf, imgsz=64, crf_gate=False)
    off.set_support([p[0] for p in pairs], [p[1] for p in pairs])
    off.fused = seg.fused  # type: ignore[method-assign]
    off.refine = lambda fg, rgb: np.zeros_like(fg)  # type: ignore[method-assign]
    assert off.crf_on and not off.predict(frame)[0].any()


def test_crf_gate_decision_same_for_set_and_add_support(net):
    """The check after add_support covers every shot, as after set_support (a stand-in network whose IoU differs
    per shot makes a stale one-shot answer visible)."""
    pairs = [_pair(seed=s) for s in range(3)]
    pairs[1][1][:] = 0
    pairs[1][1][:10, :10] = 255  # shots 1 and 2 have other masks than shot 0
    pairs[2][1][:] = 255

    def stand_in(seg: FewShotSegmenter) -> FewShotSegmenter:
        seg.fused = lambda rgb: (pairs[0][1] > 0).astype(np.float32)  # type: ignore[method-assign]
        seg.refine = lambda fg, rgb: np.zeros_like(fg) if seg.shots > 1 else fg  # type: ignore[method-assign]
        return seg

    a = stand_in(FewShotSegmenter(net, crf="meanfield", imgsz=64))
    a.set_support([p[0] for p in pairs], [p[1] for p in pairs])
    b = stand_in(FewShotSegmenter(net, crf="meanfield", imgsz=64))
    b.set_support([pairs[0][0]], [pairs[0][1]])
    assert b.crf_on and b.gate.last == (1.0, 1.0)  # one shot: the stand-in matches it exactly
    for p in pairs[1:]:
        b.add_support(*p)
    assert not a.crf_on and not b.crf_on
    assert a.gate.report() == b.gate.report()
    assert b.gate.last is not None and b.gate.last[0] < 1.0  # all three shots were scored


def test_scales_average_the_network_over_input_sides(net):
    """--scales 1 2: a guide per input side, the foreground probability the mean of the single-side ones."""
    pairs = [_pair(seed=s) for s in range(2)]
    frame = _pair(45, 70, seed=5)[0]
    single = {}
    for side in (32, 64):
        seg = FewShotSegmenter(net, imgsz=side, colour_prior=0.0)
        seg.set_support([p[0] for p in pairs], [p[1] for p in pairs])
        single[side] = seg.predict(frame)[0]
    multi = FewShotSegmenter(net, imgsz=32, colour_prior=0.0, scales=[1, 2, 2.0])  # a repeated side runs once
    assert multi.sides == (32, 64)
    multi.set_support([pairs[0][0]], [pairs[0][1]])
    multi.add_support(*pairs[1])  # shot by shot: the same running mean per side
    assert multi.shots == 2
    probs, mask = multi.predict(frame)
    assert probs.shape == (45, 70) and mask.shape == (45, 70)
    assert np.abs(single[32] - single[64]).max() > 1e-4  # the two sides differ (20x the tolerance below)
    np.testing.assert_allclose(probs, (single[32] + single[64]) / 2, atol=5e-6)
    for bad in ([0], [-1], [9], [0.25]):  # 0.25 x 32 = 8 pixels, under 16
        with pytest.raises(UsageError, match="--scales"):
            FewShotSegmenter(net, imgsz=32, scales=bad)
