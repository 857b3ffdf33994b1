"""Cue weights fitted on the support (``models.cue_fusion``, ``--fusion fit``): the logistic fit learns, excess
green is relative to the frame's own threshold, the colour features are cross-fitted, and the pipeline uses the
cue that explains its support (the blend where the fit does not beat it)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.colour_prior import ColourHistogram
from models.cue_fusion import CueWeights, crossfit_colour, cue_features, exg_relative, fit_logistic
from models.exg_cue import ExgCue, choose_cue, exg_near, pixels
from models.pipeline import SegmentationPipeline


def test_fit_logistic_recovers_weights_and_loss_falls() -> None:
    rng = np.random.default_rng(0)
    x = np.c_[rng.normal(size=(4000, 2)), np.ones(4000)]
    w_true = np.array([2.0, -1.0, 0.5])
    y = (rng.random(4000) < 1 / (1 + np.exp(-x @ w_true))).astype(float)
    w = fit_logistic(x, y, lam=1e-4)
    np.testing.assert_allclose(w, w_true, atol=0.25)

    def loss(v: np.ndarray) -> float:
        z = x @ v
        return float(np.mean(np.log1p(np.exp(z)) - y * z))

    assert loss(w) < loss(np.zeros(3)) - 0.1
    assert np.abs(fit_logistic(x, y, lam=10.0)).sum() < np.abs(w).sum() / 5  # the penalty shrinks


def _scene(rng: np.random.Generator, soil: tuple[int, int, int], light: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A (64,64,3) uint8 field: green discs (the plants, mask True) on noisy soil, everything times ``light``."""
    img = np.empty((64, 64, 3), np.float32)
    img[:] = soil
    yy, xx = np.mgrid[0:64, 0:64]
    mask = np.zeros((64, 64), bool)
    for cy, cx, r in rng.integers([8, 8, 4], [56, 56, 10], (4, 3)):
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    img[mask] = (60, 150, 50)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img * light, 0, 255).astype(np.uint8), mask


def test_exg_relative_is_positive_on_plants_under_any_light() -> None:
    rng = np.random.default_rng(1)
    for light in (0.4, 1.0):
        img, mask = _scene(rng, (120, 100, 80), light)
        e = exg_relative(img)
        assert e.shape == mask.shape and e.dtype == np.float32
        assert (e[mask] > 0).mean() > 0.95 and (e[~mask] <= 0).mean() > 0.95
    assert (exg_relative(np.full((8, 8, 3), 90, np.uint8)) <= 0).all()  # one value: no plant


def test_crossfit_colour_never_counts_the_pixel_it_predicts() -> None:
    rng = np.random.default_rng(2)
    a, ma = _scene(rng, (120, 100, 80))
    b, mb = _scene(rng, (120, 100, 80))
    la, lb = crossfit_colour([a, b], [ma, mb])
    np.testing.assert_allclose(la, ColourHistogram().fit([b], [mb]).prob(a), atol=1e-6)
    np.testing.assert_allclose(lb, ColourHistogram().fit([a], [ma]).prob(b), atol=1e-6)
    with pytest.raises(ValueError, match="two or more shots"):
        crossfit_colour([a], [ma])
    c = np.full((64, 64, 3), (120, 100, 80), np.uint8)
    (q, _) = crossfit_colour([a, c], [ma, np.zeros((64, 64), bool)])
    assert np.allclose(q, 0.05)  # the other shot holds no plant: the prior floor


class _ConstantNet:
    """A backend whose network says nothing (0.5 everywhere), no CRF."""

    crf_max_labels = 0

    def guide(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.zeros((1, 4), np.float32)

    def segment(self, query: np.ndarray, guide: np.ndarray) -> np.ndarray:
        return np.full((1, 2, *query.shape[2:]), 0.5, np.float32)

    def crf(self, probs: np.ndarray, image: np.ndarray) -> np.ndarray | None:
        return None


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("shots", [2, 3])
def test_fit_fusion_uses_the_cue_that_explains_the_support(shots: int) -> None:
    """Soil of another colour in the query (the histogram's background never saw it) and a network that says
    nothing: the blend marks the new soil or nothing, the fitted weights lean on excess green."""
    rng = np.random.default_rng(3)
    support = [_scene(rng, (120, 100, 80)) for _ in range(shots)]
    query, truth = _scene(rng, (90, 90, 95), light=0.7)
    iou = {}
    for fusion in ("blend", "fit"):
        seg = SegmentationPipeline(_ConstantNet(), "none", 32, (32,), 0.5, 0.5, False, fusion=fusion)
        seg.set_support([s for s, _ in support], [m for _, m in support])
        iou[fusion] = _iou(seg.predict(query)[1] > 0, truth)
    assert iou["fit"] > 0.9 > iou["blend"] + 0.2
    assert seg._cues is not None and seg._cues[0].weights is not None and seg._cues[0].weights[2] > 0


def test_one_shot_adds_excess_green_only_where_it_explains_the_shot() -> None:
    """One shot: nothing to hold out, no fit. Where the mask is "the green things" (ExG + Otsu matches it, the
    constant network does not) the blend is averaged with excess green, which finds the plants of a query under
    other light; where the mask is one of several plants (ExG marks them all) the blend runs unchanged."""
    rng = np.random.default_rng(6)
    img, mask = _scene(rng, (120, 100, 80))
    query, truth = _scene(rng, (90, 90, 95), light=0.7)
    fit = SegmentationPipeline(_ConstantNet(), "none", 32, (32,), 0.5, 0.5, False, fusion="fit")
    blend = SegmentationPipeline(_ConstantNet(), "none", 32, (32,), 0.5, 0.5, False, fusion="blend")
    for seg in (fit, blend):
        seg.set_support([img], [mask])
    p_fit, p_blend = fit.predict(query)[0], blend.predict(query)[0]
    np.testing.assert_allclose(p_fit, 0.5 * (p_blend + 1 / (1 + np.exp(-exg_relative(query)))), atol=1e-5)
    assert _iou(p_fit >= 0.5, truth) > 0.9 > _iou(p_blend >= 0.5, truth) + 0.2
    rep = fit.fusion_report()["classes"]["foreground"]
    assert rep["one_shot_exg"] is True and rep["weights"] is None and rep["support_iou_fit"] is None
    assert rep["support_iou_exg"] > 0.9 > rep["support_iou_net"] and rep["exg_cue"]["used"] is True
    cue = fit._cues[0]
    assert cue.uses_exg
    net_q, col_q = np.full(truth.shape, 0.4, np.float32), np.full(truth.shape, 0.6, np.float32)
    np.testing.assert_array_equal(cue.apply(net_q, col_q, query, 0.5),  # the frame's excess green passed in
                                  cue.apply(net_q, col_q, query, 0.5, exg_relative(query)))
    no_green = cue.apply(net_q, col_q, query, 0.5, np.full(truth.shape, -30.0, np.float32))  # the map given is used
    np.testing.assert_allclose(no_green, 0.25, atol=1e-6)  # (blend 0.5 + sigmoid(-30)) / 2

    one = np.zeros_like(mask)  # a single disc of the four: ExG + Otsu's IoU on the shot is well below 0.5
    yy, xx = np.mgrid[0:64, 0:64]
    one[((yy - 32) ** 2 + (xx - 32) ** 2 <= 36)] = True
    img[one] = (60, 150, 50)
    for seg in (fit, blend):
        seg.set_support([img], [one])
    np.testing.assert_array_equal(fit.predict(query)[0], blend.predict(query)[0])
    rep = fit.fusion_report()["classes"]["foreground"]
    assert rep["one_shot_exg"] is False and rep["exg_cue"]["used"] is False  # chosen, but nothing reads it


def _drawn_wide(mask: np.ndarray, radius: int) -> np.ndarray:
    """The mask as a labeller draws it whose brush runs ``radius`` pixels outside the plant."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), disc).astype(bool)


def test_halo_follows_where_the_support_draws_the_edge() -> None:
    """ExG + Otsu stops at the leaf's rim; a labeller whose masks run 2 px outside it is read from the support:
    the halo radius is 2 (0 for exact masks), excess green within it matches such masks better, and with one
    shot the pipeline marks the query as that labeller would."""
    rng = np.random.default_rng(11)
    img, mask = _scene(rng, (120, 100, 80))
    query, truth = _scene(rng, (90, 90, 95), light=0.7)
    e = exg_relative(img)
    assert choose_cue([e], [mask])[0].halo == 0
    wide = _drawn_wide(mask, 2)
    cue, iou = choose_cue([e], [wide])
    assert cue.halo == 2 and cue.side == "all" and iou > 0.9 and _iou(e > 0, wide) < iou - 0.1
    assert (exg_near(e, 0) == e).all() and (exg_near(e, 2) >= e).all()
    seg = SegmentationPipeline(_ConstantNet(), "none", 32, (32,), 0.5, 0.5, False, fusion="fit")
    seg.set_support([img], [wide])
    pred = seg.predict(query)[1] > 0
    assert seg.fusion_report()["classes"]["foreground"]["exg_cue"]["halo"] == 2
    assert _iou(pred, _drawn_wide(truth, 2)) > 0.85 > _iou(pred, truth) + 0.05
    shots = [_scene(rng, (120, 100, 80)) for _ in range(3)]  # three shots: the fit weighs excess green within it
    for radius in (0, 2):
        seg.set_support([i for i, _ in shots], [_drawn_wide(m, radius) for _, m in shots])
        pred = seg.predict(query)[1] > 0
        rep = seg.fusion_report()["classes"]["foreground"]
        assert rep["exg_cue"]["halo"] == radius and rep["weights"] is not None and rep["exg_cue"]["used"] is True
        assert _iou(pred, _drawn_wide(truth, radius)) > 0.9


def test_cue_radii_grow_with_the_camera_resolution() -> None:
    """Radii are pixels up to a 512-px long side and grow in proportion above it: the same field at 1024 px with
    a labeller whose masks run 4 px outside the green is read as halo 2 (4 px there), which no unscaled radius
    (at most 3 px) matches as well; at 512 px and below nothing changes."""
    assert [pixels(r, (384, 512)) for r in (0, 1, 3, 16)] == [0, 1, 3, 16]
    assert [pixels(r, (720, 960, 3)) for r in (1, 2, 3, 16)] == [2, 4, 6, 30]
    rng = np.random.default_rng(11)
    small, mask_small = _scene(rng, (120, 100, 80))
    img = cv2.resize(small, (1024, 1024), interpolation=cv2.INTER_NEAREST)
    mask = cv2.resize(mask_small.astype(np.uint8), (1024, 1024), interpolation=cv2.INTER_NEAREST) > 0
    wide = _drawn_wide(mask, 4)
    e = exg_relative(img)
    cue, iou = choose_cue([e], [wide], widths=False)
    assert cue == ExgCue(halo=2) and iou > 0.98
    np.testing.assert_array_equal(cue.map(e), exg_near(e, 4))
    assert _iou(exg_near(e, 3) > 0, wide) < iou - 0.01
    assert choose_cue([exg_relative(small)], [_drawn_wide(mask_small, 2)], widths=False)[0] == ExgCue(halo=2)


def test_fit_falls_back_to_the_blend_where_it_does_not_beat_it() -> None:
    cue = CueWeights()
    rng = np.random.default_rng(4)
    img, mask = _scene(rng, (120, 100, 80))
    net = mask.astype(np.float32)  # a perfect network: the blend with it is already perfect on the support
    cue.fit([net], [np.full(mask.shape, 0.3, np.float32)], [img], [mask], 0.0)
    fit_iou, blend_iou = cue.support_iou
    assert blend_iou == 1.0
    assert (cue.weights is None) == (fit_iou < blend_iou)
    assert CueWeights().fit([net], [net], [img], [np.zeros_like(mask)], 0.5).weights is None  # no foreground
    out = CueWeights().apply(net, np.zeros_like(net), img, 0.25)  # no weights: the blend
    np.testing.assert_allclose(out, 0.75 * net)


def _rare_class(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A shot of a rare class (about 5% of a 64x64 frame of plain soil) and a noisy network that sees it:
    (rgb (64,64,3) uint8, mask (64,64) bool, network probability (64,64) float32)."""
    mask = np.zeros((64, 64), bool)
    for cy, cx in rng.integers(4, 60, (6, 2)):
        mask[cy - 2:cy + 2, cx - 2:cx + 2] = True
    img = np.clip(rng.normal(110, 4, (64, 64, 3)), 0, 255).astype(np.uint8)
    net = 1 / (1 + np.exp(-(np.where(mask, 1.0, -1.0) * 1.5 + rng.normal(0, 1.5, mask.shape))))
    return img, mask, net.astype(np.float32)


def test_fit_moves_its_threshold_to_the_best_iou_on_the_support() -> None:
    """A rare class and a noisy network: the logistic's own boundary (0.5) marks too little of it; the threshold
    moved to the best IoU on the support (into the bias) marks more, and segments another frame better."""
    rng = np.random.default_rng(5)
    shots = [_rare_class(rng) for _ in range(4)]
    flat = [np.full((64, 64), 0.5, np.float32)] * 4  # the colour says nothing
    cue = CueWeights().fit([n for *_, n in shots], flat, [i for i, _, _ in shots], [m for _, m, _ in shots], 0.5)
    assert cue.weights is not None and cue.shift < 0
    img, truth, net = _rare_class(rng)
    z = cue_features(net, flat[0], img, cue=cue.exg_cue) @ cue.weights  # float64 features: the fit's own view
    np.testing.assert_allclose(cue.apply(net, flat[0], img, 0.5), (1 / (1 + np.exp(-z))).reshape(net.shape),
                               atol=1e-5)  # apply sums them in float32 per pixel
    moved = cue.apply(net, flat[0], img, 0.5) >= 0.5
    cue.weights = cue.weights + np.eye(len(cue.weights))[-1] * cue.shift  # the boundary the logistic drew
    own = cue.apply(net, flat[0], img, 0.5) >= 0.5
    assert moved.sum() > own.sum() and _iou(moved, truth) > _iou(own, truth) + 0.05


def test_unknown_fusion_is_refused() -> None:
    with pytest.raises(ValueError, match="fusion must be one of"):
        SegmentationPipeline(_ConstantNet(), "none", 32, (32,), 0.5, 0.5, False, fusion="mean")


def test_fit_fusion_with_two_classes_labels_each() -> None:
    """A label mask (1 = green plants, 2 = red ones), two shots, a network that says nothing: each class gets its
    own fitted weights and the labels come out right."""
    rng = np.random.default_rng(7)

    def two_class_scene() -> tuple[np.ndarray, np.ndarray]:
        img, green = _scene(rng, (120, 100, 80))
        _, red = _scene(rng, (120, 100, 80))
        red &= ~green
        img[red] = np.clip(rng.normal((190, 40, 40), 6, (int(red.sum()), 3)), 0, 255).astype(np.uint8)
        return img, green.astype(np.uint8) + 2 * red.astype(np.uint8)

    shots = [two_class_scene() for _ in range(2)]
    query, truth = two_class_scene()
    seg = SegmentationPipeline(_ConstantNet(), "none", 32, (32,), 0.5, 0.5, False, fusion="fit")
    seg.set_support([s for s, _ in shots], [m for _, m in shots])
    labels = seg.predict(query)[1]
    assert len(seg.classes) == 2 and seg.multiclass
    for k in (1, 2):
        assert _iou(labels == k, truth == k) > 0.8
    report = seg.fusion_report()["classes"]
    assert len(report) == 2 and all(c["support_iou_fit"] is not None for c in report.values())


def _grass_and_crop(rng: np.random.Generator, light: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (96,96,3) uint8 field of two broad green plants (discs of radius 12-16) and three thin green blades
    (lines 3 px wide) on noisy soil -> (image, crop mask, blade mask)."""
    img = np.full((96, 96, 3), (120, 100, 80), np.float32)
    crop = np.zeros((96, 96), np.uint8)
    for cy, cx, r in zip(rng.integers(20, 76, 2), rng.integers(20, 76, 2), rng.integers(12, 17, 2), strict=True):
        cv2.circle(crop, (int(cx), int(cy)), int(r), 1, -1)
    blades = np.zeros_like(crop)
    for _ in range(3):
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, 96, 4))
        cv2.line(blades, (x0, y0), (x1, y1), 1, 3)
    blades &= 1 - crop
    img[(crop | blades) > 0] = (60, 150, 50)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img * light, 0, 255).astype(np.uint8), crop > 0, blades > 0


def test_exg_cue_tells_thin_plants_from_broad_ones_by_the_support() -> None:
    """All plants are the same green: a support that marks the thin blades makes the cue "thin", one that marks
    the broad plants "broad"; with two shots and a network that says nothing the fitted pipeline then segments
    the same kind of plant in another frame, where all-green excess green would mark both. One shot reads the
    halo alone (side "all")."""
    rng = np.random.default_rng(3)
    shots = [_grass_and_crop(rng) for _ in range(2)]
    query, q_crop, q_blades = _grass_and_crop(rng, light=0.8)
    images, exgs = [s[0] for s in shots], [exg_relative(s[0]) for s in shots]
    seg = SegmentationPipeline(_ConstantNet(), "none", 32, (32,), 0.5, 0.5, False, fusion="fit")
    for kind, truth, side in ((2, q_blades, "thin"), (1, q_crop, "broad")):
        masks = [s[kind] for s in shots]
        cue, iou = choose_cue(exgs, masks)
        assert cue.side == side and iou > 0.8
        assert choose_cue(exgs, masks, widths=False)[1] < iou - 0.1  # every green pixel: the other kind too
        seg.set_support(images, masks)
        pred = seg.predict(query)[1] > 0
        rep = seg.fusion_report()["classes"]["foreground"]
        assert rep["weights"] is not None and rep["exg_cue"]["side"] == side
        assert _iou(pred, truth) > 0.75 > _iou(exg_relative(query) > 0, truth)
        seg.set_support(images[:1], masks[:1])
        seg.predict(query)
        assert seg.fusion_report()["classes"]["foreground"]["exg_cue"]["side"] == "all"


def test_float32_logit_and_sigmoid_equal_float64_and_leave_their_input() -> None:
    """The per-frame float32 logit and logistic (OpenCV's log and exp, in place on their own copy) give the float64
    values, at the clipped ends too, and do not touch the array they are given."""
    from models.cue_fusion import _logit, _sigmoid

    rng = np.random.default_rng(0)
    p = rng.random((50, 60), dtype=np.float32)
    p[0, :4] = [0.0, 1.0, 1e-6, 1 - 1e-6]
    p0 = p.copy()
    q = np.clip(p, 1e-4, 1 - 1e-4)
    np.testing.assert_allclose(_logit(p, np.float32), np.log(q / (1 - q)), atol=2e-6)  # numpy in float32
    np.testing.assert_allclose(_logit(p, np.float32), _logit(p, np.float64), rtol=1e-4, atol=1e-5)
    z = rng.normal(0, 8, (50, 60)).astype(np.float32)
    z[0, :4] = [-1e4, 1e4, -30.0, 30.0]
    z0 = z.copy()
    fast = _sigmoid(z)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, _sigmoid(z.astype(np.float64)), atol=1e-7)
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(z, z0)
