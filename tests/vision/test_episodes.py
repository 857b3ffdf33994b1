"""Reading a segmentation dataset (CONTRACTS format), deterministic episodes, augmentation, metrics."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from microfarm import UsageError
from vision.augment import strong_augment
from vision.episodes import EpisodeSampler, SegmentationDataset
from vision.metrics import SegmentationMetrics, binary_iou


def make_dataset(root, n: int = 12, size: int = 48, seed: int = 0):
    """A tiny synthetic dataset: discs of species 1..4 (folds [[1],[2],[3],[4]]) on brown soil."""
    rng = np.random.default_rng(seed)
    for d in ("rgb", "species", "instance"):
        (root / d).mkdir(parents=True, exist_ok=True)
    colours = {1: (40, 200, 40), 2: (200, 200, 40), 3: (40, 120, 200), 4: (220, 60, 60)}
    frames = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        rgb = np.full((size, size, 3), (110, 80, 50), np.uint8)
        species = np.zeros((size, size), np.uint8)
        instance = np.zeros((size, size), np.uint16)
        for j, c in enumerate(rng.choice([1, 2, 3, 4], size=2, replace=False)):
            cx, cy, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(5, 10)
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            rgb[disc], species[disc], instance[disc] = colours[int(c)], c, j + 1
        stem = f"{i:05d}"
        cv2.imwrite(str(root / "rgb" / f"{stem}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "species" / f"{stem}.png"), species)
        cv2.imwrite(str(root / "instance" / f"{stem}.png"), instance)
        px = {str(c): int((species == c).sum()) for c in np.unique(species) if c}
        frames.append({"stem": stem, "rgb": f"rgb/{stem}.png", "species": f"species/{stem}.png",
                       "instance": f"instance/{stem}.png", "species_pixels": px})
    index = {"task": "segmentation", "size": size, "folds": [[1], [2], [3], [4]],
             "species": [{"id": c, "name": f"s{c}", "kind": "crop", "fold": c - 1} for c in range(1, 5)],
             "frames": frames}
    (root / "index.json").write_text(json.dumps(index))
    return root


def test_dataset_reads_contract_format(tmp_path):
    ds = SegmentationDataset(make_dataset(tmp_path / "d"))
    assert len(ds) == 12 and ds.fold_classes([0, 2]) == [1, 3]
    img, sp = ds.image(0), ds.species_mask(0)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    assert sp.shape == (48, 48) and sp.dtype == np.uint8
    for c, count in ds.pixels[0].items():
        assert int(ds.class_mask(0, c).sum()) == count
    with pytest.raises(UsageError, match="folds 0..3"):
        ds.fold_classes([7])
    with pytest.raises(UsageError, match="index.json"):
        SegmentationDataset(tmp_path / "missing")


def test_episodes_are_deterministic_and_valid(tmp_path):
    ds = SegmentationDataset(make_dataset(tmp_path / "d"))
    a = EpisodeSampler(ds, folds=[0, 1, 2], shots=2, min_pixels=20, seed=3)
    b = EpisodeSampler(ds, folds=[0, 1, 2], shots=2, min_pixels=20, seed=3)
    for i in range(6):
        ea, eb = a.episode(i), b.episode(i)
        assert ea.frames == eb.frames and ea.class_id == eb.class_id
        assert ea.class_id in (1, 2, 3) and len(ea.support_images) == 2 and len(set(ea.frames)) == 3
        for m in [*ea.support_masks, ea.query_mask]:
            assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} and m.sum() >= 20
    other = EpisodeSampler(ds, [0, 1, 2], 2, 20, seed=4)
    assert [a.episode(i).frames for i in range(6)] != [other.episode(i).frames for i in range(6)]
    held_out = EpisodeSampler(ds, folds=[3], shots=1, min_pixels=20, seed=0)
    assert {held_out.episode(i).class_id for i in range(5)} == {4}
    with pytest.raises(UsageError, match="render more frames"):
        EpisodeSampler(ds, folds=[0], shots=50)


def test_augmented_episodes(tmp_path):
    ds = SegmentationDataset(make_dataset(tmp_path / "d"))
    s = EpisodeSampler(ds, folds=[0, 1], shots=(1, 3), min_pixels=20, seed=1, size=32, augment=True)
    e1, e2 = s.episode(5), s.episode(5)
    assert np.array_equal(e1.query_image, e2.query_image)
    assert e1.query_image.shape == (32, 32, 3) and e1.query_mask.shape == (32, 32)
    assert {len(s.episode(i).support_images) for i in range(20)} <= {1, 2, 3}


def test_augment_keeps_mask_aligned():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 255
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 1
    for _ in range(5):
        a, m = strong_augment(img, mask, rng, 48, "light")
        bright = a.mean(2) > 127
        assert (bright == m.astype(bool)).mean() > 0.9


def test_metrics_pascal_definitions():
    met = SegmentationMetrics()
    t = np.zeros((4, 4), bool)
    t[:2] = True  # 8 foreground pixels
    p = np.zeros((4, 4), bool)
    p[:1] = True  # 4 predicted, all right
    met.update(p, t, class_id=1)  # fg IoU 4/8; bg IoU 8/12
    met.update(t, t, class_id=1)  # perfect
    met.update(p * 255, t, class_id=2)
    assert met.class_iou() == {1: 12 / 16, 2: 0.5}
    assert met.miou() == pytest.approx((0.75 + 0.5) / 2)
    assert met.fb_iou() == pytest.approx(((4 + 8 + 4) / (8 + 8 + 8) + (8 + 8 + 8) / (12 + 8 + 12)) / 2)
    assert binary_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert met.summary()["episodes"] == 3
