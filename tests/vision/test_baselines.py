"""The two baselines: excess green + Otsu finds green on brown; histogram back-projection follows the support."""

from __future__ import annotations

import numpy as np
import pytest

from vision.baselines import HistogramBackprojection, excess_green, exg_otsu
from vision.metrics import binary_iou


def _scene(seed: int, fg_colour=(50, 170, 40), other=None, size: int = 96):
    """Brown noisy soil with a disc of ``fg_colour`` (and optionally a square of ``other``)."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal((115, 85, 55), 12, (size, size, 3)), 0, 255)
    yy, xx = np.mgrid[:size, :size]
    cx, cy, r = rng.integers(30, size - 30, 2).tolist() + [int(rng.integers(12, 20))]
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    img[disc] = np.clip(rng.normal(fg_colour, 10, (int(disc.sum()), 3)), 0, 255)
    sq = np.zeros_like(disc)
    if other is not None:
        x0 = 5 if cx > size // 2 else size - 25
        sq[5:25, x0:x0 + 20] = True
        sq &= ~disc
        img[sq] = np.clip(rng.normal(other, 10, (int(sq.sum()), 3)), 0, 255)
    return img.astype(np.uint8), disc, sq


def test_exg_otsu_finds_green_on_brown():
    for seed in range(5):
        img, disc, _ = _scene(seed)
        pred = exg_otsu(img)
        assert pred.shape == disc.shape and pred.dtype == bool
        assert binary_iou(pred, disc) > 0.9


def test_exg_otsu_on_a_flat_image_is_empty():
    assert not exg_otsu(np.full((20, 30, 3), 90, np.uint8)).any()
    exg = excess_green(np.zeros((4, 4, 3), np.uint8))
    assert exg.shape == (4, 4) and np.all(exg == 0)


def test_histogram_backprojection_follows_the_support():
    # support: a red disc is the thing; a green square is background. Query: both again.
    sup, sup_disc, _ = _scene(0, fg_colour=(200, 40, 40), other=(50, 170, 40))
    q, q_disc, q_sq = _scene(1, fg_colour=(200, 40, 40), other=(50, 170, 40))
    hb = HistogramBackprojection().fit([sup], [sup_disc])
    p = hb.prob(q)
    assert p.shape == q.shape[:2] and p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1
    pred = hb.predict(q)
    assert binary_iou(pred, q_disc) > 0.8
    assert pred[q_sq].mean() < 0.1  # the green square is not the red thing: ExG+Otsu would take it
    assert binary_iou(exg_otsu(q), q_disc) < binary_iou(pred, q_disc)


def test_histogram_backprojection_needs_foreground():
    img, _, _ = _scene(0)
    with pytest.raises(ValueError, match="no foreground"):
        HistogramBackprojection().fit([img], [np.zeros(img.shape[:2], bool)])
    with pytest.raises(RuntimeError, match="fit"):
        HistogramBackprojection().predict(img)


def test_colour_histogram_shot_by_shot_equals_all_at_once():
    """The colour prior sums the shots' counts: adding shots one at a time = fitting them together."""
    from models.colour_prior import ColourHistogram, blend

    shots = [_scene(s, fg_colour=(200, 40, 40), other=(50, 170, 40)) for s in range(3)]
    q = _scene(7, fg_colour=(200, 40, 40))[0]
    whole = ColourHistogram().fit([s[0] for s in shots], [s[1] for s in shots])
    one = ColourHistogram().fit([shots[0][0]], [shots[0][1]])
    for img, disc, _ in shots[1:]:
        one.add(img, disc)
    assert one.shots == whole.shots == 3
    np.testing.assert_array_equal(one.prob(q), whole.prob(q))
    net = np.full(q.shape[:2], 0.2, np.float32)
    np.testing.assert_allclose(blend(net, whole.prob(q), 0.5), 0.1 + 0.5 * whole.prob(q), atol=1e-6)
    np.testing.assert_array_equal(blend(net, whole.prob(q), 0.0), net)


def test_colour_histogram_looks_up_every_pixels_own_bin():
    """The lookup-table bins and the remap lookup give what integer HSV binning and indexing give, at the hue's and
    value's extremes too; the codes of a frame computed once serve every histogram of the same bins."""
    import cv2

    from models.colour_prior import ColourHistogram

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    img[0, :4] = [[255, 0, 0], [255, 255, 255], [0, 0, 0], [255, 0, 1]]  # hue 0 / 179, value 255 / 0
    mask = rng.random((70, 90)) < 0.3
    for bins in ((30, 16, 8), (180, 256, 1)):  # the default; the largest hue and saturation counts
        hist = ColourHistogram(bins=bins, smooth=0.0).fit([img], [mask])
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.int64)
        bh, bs, bv = bins
        code = ((np.minimum(hsv[..., 0] * bh // 180, bh - 1) * bs + np.minimum(hsv[..., 1] * bs // 256, bs - 1))
                * bv + np.minimum(hsv[..., 2] * bv // 256, bv - 1))
        np.testing.assert_array_equal(hist.codes(img), code.astype(np.float32))
        np.testing.assert_array_equal(hist.fg_counts, np.bincount(code[mask], minlength=bh * bs * bv))
        np.testing.assert_array_equal(hist.prob(img), hist.posterior[code])
        np.testing.assert_array_equal(hist.prob(img, hist.codes(img)), hist.prob(img))
