"""``vision.real_data``: the real photo sets' splits, masks and errors.

Tests on the photos themselves skip where ``../shared/data/real`` (or ``$MICROFARM_REAL_DATA``) is absent; the
photos are never copied into the repository, so the other tests build a tiny synthetic tree in a temp folder.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from microfarm import UsageError
from vision.real_data import ENV_VAR, REAL_SETS, RealDataMissing, RealItem, RealSet, real_root


def real_set(name: str) -> RealSet:
    """``RealSet(name)`` from the default root, or skip with a message saying where the photos were looked for."""
    root = real_root()
    try:
        return RealSet(name)
    except RealDataMissing:
        pytest.skip(f"real photos not found at {root}: put them beside the repository as ../shared/data/real or set "
                    f"{ENV_VAR}=DIR")


def fake_tree(root: Path) -> Path:
    """A tiny peanut/ + cwf788/ tree of synthetic pictures (no real photo), with anti-aliased label colours."""
    rng = np.random.default_rng(0)
    pea = root / "peanut"
    (pea / "images").mkdir(parents=True)
    (pea / "labels").mkdir()
    for i in range(1, 11):
        img = rng.integers(0, 255, (30, 40, 3), np.uint8)
        lab = np.zeros((30, 40, 3), np.uint8)  # RGB
        lab[5:15, 5:15] = (0, 255, 0)  # crop
        lab[20:28, 20:35] = (255, 0, 0)  # weed
        lab[15, 5:15] = (10, 200, 20)  # an anti-aliased edge: nearest is green
        lab[19, 20:35] = (180, 40, 30)  # nearest is red
        lab[0, :] = (60, 50, 40)  # nearest is black
        cv2.imwrite(str(pea / "images" / f"{i:04d}.jpg"), img)
        cv2.imwrite(str(pea / "labels" / f"{i:04d}.png"), lab[..., ::-1])  # OpenCV writes BGR
    cwf = root / "cwf788"
    for split, n in (("train", 3), ("validation", 2), ("test", 4)):
        (cwf / split).mkdir(parents=True)
        (cwf / f"{split}label").mkdir()
        for i in range(n):
            cv2.imwrite(str(cwf / split / f"{i:03d}_image.jpg"), rng.integers(0, 255, (24, 32, 3), np.uint8))
            lab = np.zeros((24, 32), np.uint8)
            lab[4:12, 4:20] = 255
            cv2.imwrite(str(cwf / f"{split}label" / f"{i:03d}_image.png"), lab)
    return root


def test_fake_tree_splits_masks_and_nearest_colours(tmp_path):
    root = fake_tree(tmp_path)
    pea = RealSet("peanut", root)
    assert pea.tasks == REAL_SETS["peanut"] == ("vegetation", "crop", "weed") and pea.splits == ("query", "support")
    assert [it.stem for it in pea.items("query")] == ["0005", "0010"]
    assert [it.stem for it in pea.items("support")] == ["0001", "0002", "0003", "0004", "0006", "0007", "0008",
                                                        "0009"]
    item = pea.items("query")[0]
    assert isinstance(item, RealItem) and item.set == "peanut" and item.image.name == "0005.jpg"
    m = pea.masks(item)
    assert set(m) == {"vegetation", "crop", "weed"} and all(v.shape == (30, 40) and v.dtype == bool for v in m.values())
    assert m["crop"].sum() == 110 and m["weed"].sum() == 8 * 15 + 15  # the in-between colours go to the nearest
    assert not m["crop"][0].any() and not m["weed"][0].any()
    assert np.array_equal(m["vegetation"], m["crop"] | m["weed"])
    small, ms = pea.image(item, max_side=20), pea.masks(item, max_side=20)
    assert small.shape == (15, 20, 3) and small.dtype == np.uint8
    assert all(v.shape == (15, 20) for v in ms.values())
    assert pea.image(item, max_side=100).shape == (30, 40, 3)  # never enlarged
    assert pea.pixel_counts(item, 20) == {t: int(v.sum()) for t, v in ms.items()}
    cwf = RealSet("cwf788", root)
    assert cwf.tasks == ("crop",) and cwf.splits == ("train", "validation", "test")
    assert [len(cwf.items(s)) for s in cwf.splits] == [3, 2, 4]
    it = cwf.items("test")[0]
    assert cwf.masks(it)["crop"].sum() == 8 * 16 and cwf.image(it).shape == (24, 32, 3)


def test_image_is_rgb(tmp_path):
    root = tmp_path / "r"
    fake_tree(root)
    path = root / "cwf788" / "test" / "000_image.jpg"
    bgr = np.zeros((24, 32, 3), np.uint8)
    bgr[..., 2] = 250  # red in OpenCV's BGR order
    cv2.imwrite(str(path), bgr)
    rgb = RealSet("cwf788", root).image(RealSet("cwf788", root).items("test")[0])
    assert rgb[..., 0].mean() > 200 and rgb[..., 2].mean() < 30


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="peanut, cwf788"):
        RealSet("nope", tmp_path)
    with pytest.raises(RealDataMissing) as e:
        RealSet("peanut", tmp_path / "absent")
    msg = str(e.value)
    assert isinstance(e.value, UsageError) and "\n" not in msg
    assert str(tmp_path / "absent") in msg and "../shared/data/real" in msg and ENV_VAR in msg and "--real-root" in msg
    (tmp_path / "half" / "peanut" / "images").mkdir(parents=True)
    with pytest.raises(RealDataMissing, match="labels"):
        RealSet("peanut", tmp_path / "half")
    root = fake_tree(tmp_path / "ok")
    with pytest.raises(UsageError, match="query, support"):
        RealSet("peanut", root).items("test")
    monkeypatch.setenv(ENV_VAR, str(root))
    assert real_root() == root and real_root(tmp_path) == tmp_path  # an explicit root beats the variable
    assert len(RealSet("peanut").items("query")) == 2
    monkeypatch.delenv(ENV_VAR)
    assert real_root() == (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real").resolve()


def test_peanut_photos():
    pea = real_set("peanut")
    query, support = pea.items("query"), pea.items("support")
    assert len(query) == 80 and len(support) == 320
    assert [it.stem for it in query] == [f"{i:04d}" for i in range(5, 401, 5)]
    assert not {it.stem for it in query} & {it.stem for it in support}
    for item in (query[0], support[100], query[-1]):
        img = pea.image(item)
        assert img.shape == (720, 960, 3) and img.dtype == np.uint8
        m = pea.masks(item)
        assert all(v.shape == img.shape[:2] and v.dtype == bool for v in m.values())
        assert np.array_equal(m["vegetation"], m["crop"] | m["weed"]) and not (m["crop"] & m["weed"]).any()
        small, ms = pea.image(item, 128), pea.masks(item, 128)
        assert small.shape == (96, 128, 3) and all(v.shape == (96, 128) for v in ms.values())
    assert pea.masks(query[0])["vegetation"].any()
    for item in query + support:
        if int(item.stem) > 320:
            assert pea.pixel_counts(item, 128)["crop"] == 0, item.stem  # 0321-0400: weed only
    assert pea.pixel_counts(query[-1], 128)["weed"] > 0


def test_cwf788_photos():
    cwf = real_set("cwf788")
    assert {s: len(cwf.items(s)) for s in cwf.splits} == {"train": 400, "validation": 88, "test": 300}
    item = cwf.items("test")[0]
    img, m = cwf.image(item), cwf.masks(item)
    assert img.shape == (384, 512, 3) and m["crop"].shape == (384, 512) and m["crop"].any() and not m["crop"].all()
    assert cwf.masks(item, 256)["crop"].shape == cwf.image(item, 256).shape[:2] == (192, 256)
