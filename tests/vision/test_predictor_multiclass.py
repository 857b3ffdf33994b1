"""Crop and weed in one pass: the pipeline's multi-class decision (a stub backend whose outputs we control), the
shipped weights on two plants, multi-class = the binary pipeline per class, and binary masks unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.guided_net import GuidedNet, GuidedNetConfig
from models.labels import class_distribution
from models.pipeline import SegmentationPipeline
from vision.predictor import FewShotSegmenter, SupportError

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "weights" / "segmenter.safetensors"


def scene(seed: int, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Noisy soil with a green disc (label 1) and a yellow-green square (label 2), placed by ``seed``."""
    r = np.random.default_rng(seed)
    img = np.clip(r.normal((120, 90, 60), 10, (h, w, 3)), 0, 255).astype(np.uint8)
    lab = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    disc = (xx - r.integers(24, 40)) ** 2 + (yy - r.integers(30, 66)) ** 2 <= 16 ** 2
    img[disc] = np.clip(r.normal((40, 170, 40), 8, (int(disc.sum()), 3)), 0, 255)
    lab[disc] = 1
    x0, y0 = r.integers(70, 90), r.integers(20, 50)
    img[y0:y0 + 30, x0:x0 + 30] = np.clip(r.normal((170, 200, 60), 8, (30, 30, 3)), 0, 255)
    lab[y0:y0 + 30, x0:x0 + 30] = 2
    return img, lab


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


class ColourStub:
    """A backend we control: the guide is the mean colour under the mask, the foreground probability of a pixel
    falls with its colour's distance to the guide; the CRF records the labels it gets and changes nothing."""

    def __init__(self, crf_max_labels: int = 0) -> None:
        self.crf_max_labels, self.crf_labels = crf_max_labels, []

    def guide(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = mask[0, 0]
        return ((image[0] * w).sum((1, 2)) / w.sum())[None].astype(np.float32)

    def segment(self, query: np.ndarray, guide: np.ndarray) -> np.ndarray:
        d = ((query[0] - guide[0][:, None, None]) ** 2).sum(0)
        fg = np.exp(-d / (2 * 0.1 ** 2)).astype(np.float32)
        return np.stack([1 - fg, fg])[None]

    def crf(self, probs: np.ndarray, image: np.ndarray) -> np.ndarray:
        self.crf_labels.append(probs.shape[1])
        return probs


def test_decision_over_background_and_classes_with_a_stub_backend() -> None:
    stub = ColourStub(crf_max_labels=99)
    pipe = SegmentationPipeline(stub, "meanfield", 64, (64,), 0.5, 0.0, crf_gate=False)
    s, lab = scene(0)
    pipe.set_support([s], [lab])
    assert pipe.classes == ("class1", "class2") and pipe.multiclass and pipe.shots == 1
    q, truth = scene(1)
    probs, pred = pipe.predict(q)
    assert probs.shape == (2, 96, 128) and probs.dtype == np.float32 and pred.dtype == np.uint8
    assert set(np.unique(pred)) == {0, 1, 2} and stub.crf_labels == [3]  # the CRF got background + 2 classes
    for k in (0, 1, 2):
        assert _iou(pred == k, truth == k) > 0.9, k
    # the rule itself: background where the classes' total (= the largest class probability) is under 0.5
    np.testing.assert_array_equal(pred == 0, probs.sum(0) < 0.5)
    np.testing.assert_array_equal(pred[pred > 0], probs.argmax(0)[pred > 0] + 1)
    two = SegmentationPipeline(ColourStub(crf_max_labels=2), "meanfield", 64, (64,), 0.5, 0.0, crf_gate=True)
    two.set_support([s], [lab])
    assert not two.crf_supported and not two.crf_on  # a two-label CRF (a bundle's crf.onnx) is skipped


def test_every_class_needs_a_pixel_and_add_support_keeps_the_classes() -> None:
    pipe = SegmentationPipeline(ColourStub(), "none", 64, (64,), 0.5, 0.5, crf_gate=True)
    s, lab = scene(0)
    with pytest.raises(ValueError, match="class 'crop' .* has no pixel in any support mask"):
        pipe.set_support([s], [np.where(lab == 1, 0, lab)], classes=["crop", "weed"])
    pipe.set_support([s], [lab], classes=["crop", "weed"])
    s2, lab2 = scene(2)
    pipe.add_support(s2, np.where(lab2 == 1, 0, lab2))  # a later shot may show some classes only
    assert pipe.shots == 2 and pipe._counts == {1: 1, 2: 2}
    with pytest.raises(ValueError, match="value 7 on"):
        pipe.add_support(s2, np.where(lab2 == 1, 7, lab2))
    assert pipe.shots == 2  # a refused shot changes nothing


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped weights are not in this checkout")
def test_shipped_weights_label_two_plants_with_their_two_labels() -> None:
    support, query = scene(0), scene(1)
    for colour_prior in (0.0, 0.5):  # the network alone, and the default pipeline
        seg = FewShotSegmenter(SHIPPED, imgsz=128, colour_prior=colour_prior)
        seg.set_support([support[0]], [support[1]])
        probs, pred = seg.predict(query[0])
        assert probs.shape == (2, 96, 128)
        for k in (1, 2):
            assert _iou(pred == k, query[1] == k) > 0.75, (colour_prior, k)


@pytest.fixture(scope="module")
def net() -> GuidedNet:
    torch.manual_seed(0)
    return GuidedNet(GuidedNetConfig(backbone="compact", hidden=16)).eval()


@pytest.mark.parametrize("crf", ["none", "meanfield"])
def test_multiclass_is_the_binary_pipeline_per_class(net: GuidedNet, crf: str) -> None:
    """Each class's probability before the CRF is exactly what a binary segmenter gives for that class's mask
    (its own guide and colour histogram, the rest as negative); the mask follows the decision rule."""
    shots = [scene(s) for s in range(2)]
    multi = FewShotSegmenter(net, crf=crf, imgsz=64, crf_gate=False)
    multi.set_support([s for s, _ in shots], [m for _, m in shots])
    q = scene(5)[0]
    per_class = []
    for k in (1, 2):
        binary = FewShotSegmenter(net, crf=crf, imgsz=64)
        binary.set_support([s for s, _ in shots], [(m == k).astype(np.uint8) * 255 for _, m in shots])
        per_class.append(binary.fused(q))
    np.testing.assert_allclose(multi.fused(q), class_distribution(np.stack(per_class)), atol=1e-6)
    probs, pred = multi.predict(q)
    assert probs.shape == (2, 96, 128) and set(np.unique(pred)) <= {0, 1, 2}
    if crf == "meanfield":
        assert not np.allclose(probs, multi.fused(q), atol=1e-3)  # the 3-label CRF ran


def test_binary_masks_give_the_results_of_before(net: GuidedNet) -> None:
    """0/255, 0/1, a colour mask of one colour and a one-class legend are one binary support: the same
    probabilities and 0/255 masks."""
    img, lab = scene(0)
    fg = lab == 1
    q = scene(3)[0]
    outs = []
    for mask, classes in [(fg * np.uint8(255), None), (fg.astype(np.uint8), None),
                          (np.dstack([fg * 0, fg * 255, fg * 0]).astype(np.uint8), None),
                          (np.dstack([fg * 0, fg * 255, fg * 0]).astype(np.uint8), {"weed": (0, 255, 0)})]:
        seg = FewShotSegmenter(net, crf="meanfield", imgsz=64)
        seg.set_support([img], [mask], classes)
        outs.append(seg.predict(q))
        assert not seg.multiclass and outs[-1][0].shape == (96, 128) and set(np.unique(outs[-1][1])) <= {0, 255}
    assert seg.classes == ("weed",)
    for probs, mask in outs[1:]:
        np.testing.assert_array_equal(probs, outs[0][0])
        np.testing.assert_array_equal(mask, outs[0][1])
    with pytest.raises(SupportError, match="needs a legend"):
        FewShotSegmenter(net, imgsz=64).set_support([img], [np.dstack([fg * 255, (lab == 2) * 255, fg * 0])])
