"""Real training episodes (``vision.real_episodes``) on a synthetic CWF-788-shaped tree (no real photo is copied):
exact crop masks, pseudo-labelled vegetation and weed with an ignored ring, determinism, test/ refused."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_real_data import fake_tree

from microfarm import UsageError
from vision.real_episodes import IGNORE, RealEpisodes


@pytest.fixture()
def root(tmp_path):
    root = fake_tree(tmp_path)
    for split in ("train", "validation"):  # green plants on brown soil, so ExG has something to find
        for p in sorted((root / "cwf788" / split).glob("*.jpg")):
            img = np.full((24, 32, 3), (60, 90, 130), np.uint8)  # BGR brown
            img[4:14, 4:20] = (40, 170, 60)  # the crop (label 255 on rows 4-11) and green just below it
            img[16:22, 22:30] = (30, 200, 40)  # a weed
            cv2.imwrite(str(p), img)
    return root


def test_labels_crop_exact_vegetation_and_weed_from_exg(root):
    ep = RealEpisodes(root, min_pixels=10)
    assert len(ep.items) == 5  # train 3 + validation 2, never test
    lab = ep.labels(0)
    assert lab["crop"][4:12, 4:20].all() and lab["crop"].sum() == 8 * 16
    assert lab["vegetation"][17:21, 23:29].all() and lab["vegetation"][4:12, 4:20].all()
    assert lab["weed"][17:21, 23:29].all() and not (lab["weed"][4:12, 4:20] == 1).any()
    assert (lab["weed"][12:14, 6:18] == IGNORE).all()  # green within the ring around the crop: left out
    assert not (lab["weed"][17:21, 23:29] == IGNORE).any()
    assert not lab["vegetation"][0:2, 28:32].any()  # soil


def test_episodes_are_deterministic_and_hold_their_task(root):
    a, b = RealEpisodes(root, min_pixels=10, seed=3), RealEpisodes(root, min_pixels=10, seed=3)
    for i in range(6):
        ta, si, sm, q, qm = a.episode(i, 2)
        tb, *_, qb, qmb = b.episode(i, 2)
        assert ta == tb and np.array_equal(q, qb) and np.array_equal(qm, qmb)
        assert ta in ("crop", "vegetation", "weed") and len(si) == len(sm) == 2
        assert all(set(np.unique(m)) <= {0, 1} and m.any() for m in sm)
        assert (qm == 1).sum() >= 10


def test_test_split_is_refused(root):
    with pytest.raises(UsageError, match="evaluation only"):
        RealEpisodes(root, splits=("train", "test"))
