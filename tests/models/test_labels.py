"""Multi-class support format (models.labels, models.support_io): binary vs indexed vs colour-coded masks, the
--classes legend, its errors, and the per-pixel decision rule."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.labels import (
    ClassSpec,
    class_distribution,
    class_fractions,
    decide,
    interpret_masks,
    parse_classes,
)
from models.support_io import read_mask


def _labels(h: int = 20, w: int = 30) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    lab[2:8, 2:10] = 1
    lab[10:18, 15:25] = 2
    return lab


def test_parse_classes_colours_and_values() -> None:
    legend = parse_classes(["crop=0,255,0", "weed = 255, 0, 0".replace(" ", ""), "soil_2=3"])
    assert legend == (ClassSpec("crop", (0, 255, 0)), ClassSpec("weed", (255, 0, 0)), ClassSpec("soil_2", 3))


@pytest.mark.parametrize(("value", "message"), [
    ("crop", "is not valid: give NAME=R,G,B"), ("crop=0,255", "is not valid"), ("=1,2,3", "is not valid"),
    ("crop=red", "is not valid"), ("crop=0,300,0", "0..255"), ("crop=0,0,0", "not black"), ("crop=0", "1..65535"),
    ("crop=-1,2,3", "is not valid")])
def test_malformed_classes_say_the_syntax(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_classes([value])
    with pytest.raises(ValueError, match="given twice"):
        parse_classes(["a=1,2,3", "a=4,5,6"])
    with pytest.raises(ValueError, match="given twice"):
        parse_classes(["a=7", "b=7,7,7"])  # a gray colour is its value


def test_binary_masks_stay_binary() -> None:
    """One value or colour, or gray values above MAX_CLASSES (antialiased/JPEG), is the old binary format."""
    m = (_labels() > 0).astype(np.uint8)
    for masks in ([m * 255], [m], [m.astype(bool)], [np.dstack([m * 0, m * 200, m * 0])], [m * 255, m * 255],
                  [np.where(m, 255, np.where(np.arange(30) % 7 == 0, 128, 0)).astype(np.uint8)],
                  [m.astype(np.uint16) * 65535]):
        sl = interpret_masks(masks)
        assert sl.binary and sl.names == ("foreground",)
        for raw, lab in zip(masks, sl.masks, strict=True):
            want = np.asarray(raw) != 0
            assert np.array_equal(lab != 0, want if want.ndim == 2 else want.any(2))


def test_indexed_and_colour_coded_masks_give_labels() -> None:
    lab = _labels()
    sl = interpret_masks([lab, np.where(lab == 2, 2, 0).astype(np.uint8)])  # shot 2 shows class 2 only
    assert not sl.binary and sl.names == ("class1", "class2") and np.array_equal(sl.masks[0], lab)
    colours = np.zeros(lab.shape + (3,), np.uint8)
    colours[lab == 1], colours[lab == 2] = (0, 255, 0), (255, 0, 0)
    sl = interpret_masks([colours], parse_classes(["crop=0,255,0", "weed=255,0,0"]))
    assert sl.names == ("crop", "weed") and np.array_equal(sl.masks[0], lab)
    sl = interpret_masks([lab * 100], {"a": 100, "b": 200})  # a legend of values forces labels for 0/100/200
    assert np.array_equal(sl.masks[0], lab)
    assert interpret_masks([lab], ["crop", "weed"]).names == ("crop", "weed")  # plain names: values 1..K


def test_support_errors_name_the_problem_and_the_fix() -> None:
    lab = _labels()
    colours = np.zeros(lab.shape + (3,), np.uint8)
    colours[lab == 1], colours[lab == 2] = (0, 255, 0), (255, 0, 0)
    with pytest.raises(ValueError, match=r"2 colours .*needs a legend, --classes NAME=R,G,B"):
        interpret_masks([colours])
    with pytest.raises(ValueError, match=r"colour 255,0,0 on 80 pixels, which the classes legend \(crop=0,255,0\) "
                                         r"lacks: add --classes NAME=255,0,0"):
        interpret_masks([colours], parse_classes(["crop=0,255,0"]))
    with pytest.raises(ValueError, match="value 3 on .* lacks"):
        interpret_masks([np.where(lab == 2, 3, lab).astype(np.uint8)], ["crop", "weed"])
    with pytest.raises(ValueError, match="class 'weed' .* has no pixel in any support mask"):
        interpret_masks([np.where(lab == 2, 0, lab).astype(np.uint8)], ["crop", "weed"])
    with pytest.raises(ValueError, match="class 'class2' .* has no pixel"):  # labels 1 and 3: 2 is missing
        interpret_masks([np.where(lab == 2, 3, lab).astype(np.uint8)])


def test_read_mask_gives_rgb_colours_and_palette_indices(tmp_path: Path) -> None:
    """OpenCV reads BGR: a colour-coded PNG comes back RGB, as its legend is written; a palette PNG gives its
    indices (Pillow), and its palette colours when asked for colours."""
    lab = _labels()
    rgb = np.zeros(lab.shape + (3,), np.uint8)
    rgb[lab == 1], rgb[lab == 2] = (0, 255, 0), (255, 0, 0)
    cv2.imwrite(str(tmp_path / "c.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_mask(tmp_path / "c.png"), rgb)
    image = pytest.importorskip("PIL.Image")
    im = image.fromarray(lab, "P")
    im.putpalette([0, 0, 0, 0, 255, 0, 255, 0, 0] + [0] * 759)
    im.save(tmp_path / "p.png")
    assert np.array_equal(read_mask(tmp_path / "p.png"), lab)
    assert np.array_equal(read_mask(tmp_path / "p.png", indices=False), rgb)
    with pytest.raises(ValueError, match="does not exist"):
        read_mask(tmp_path / "none.png")


def test_decision_rule() -> None:
    """Background where the largest class probability is under the threshold, else the most probable class; the
    class probabilities sum to that largest one (the CRF's K+1-label distribution); one class: unchanged."""
    p = np.array([[[0.9, 0.2, 0.6, 0.0]], [[0.1, 0.3, 0.6, 0.0]]], np.float32)  # (K=2, 1, 4)
    q = class_distribution(p)
    np.testing.assert_allclose(q.sum(0), p.max(0), atol=1e-6)
    np.testing.assert_allclose(q[:, 0, 0], [0.9 * 0.9, 0.9 * 0.1], atol=1e-6)
    assert decide(q, 0.5).tolist() == [[1, 0, 1, 0]]  # a tie goes to the first class
    assert decide(q, 0.1).tolist() == [[1, 2, 1, 0]]
    assert class_fractions(np.array([[0, 1, 2, 2]], np.uint8), ("crop", "weed")) == {"crop": 0.25, "weed": 0.5}
