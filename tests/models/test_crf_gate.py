"""The CRF gate: keeps a CRF that cleans a broad mask, drops one that erases a thin one, decides once per support."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.crf_gate import CRFGate, support_crf_gain


def _opening(fg: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """A stand-in CRF that removes everything narrower than 5 px (as a smoothness term does) and salt noise."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    return cv2.morphologyEx((fg >= 0.5).astype(np.uint8), cv2.MORPH_OPEN, k).astype(np.float32)


def _shot(kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.zeros((64, 64), bool)
    if kind == "broad":
        mask[16:48, 12:44] = True
    else:  # three 2-px leaves
        mask[8:56, 10:12] = mask[8:56, 30:32] = mask[8:56, 50:52] = True
    return rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), mask


def _noisy(mask: np.ndarray, seed: int) -> np.ndarray:
    """The 'network': the mask with 3% of pixels flipped to foreground."""
    fg = mask.astype(np.float32)
    fg[np.random.default_rng(seed).random(mask.shape) < 0.03] = 1.0
    return fg


@pytest.mark.parametrize(("kind", "want"), [("broad", True), ("thin", False)])
def test_gain_and_decision_follow_the_support(kind: str, want: bool) -> None:
    shots = [_shot(kind, s) for s in range(3)]
    truth = {img.tobytes(): m for img, m in shots}  # by content: the gate keeps copies

    def network(img: np.ndarray) -> np.ndarray:
        return _noisy(truth[img.tobytes()], 1)

    without, with_crf = support_crf_gain(shots, network, _opening)
    assert (with_crf >= without) is want, (kind, without, with_crf)
    gate = CRFGate()
    for img, m in shots:
        gate.add(img, m.astype(np.uint8) * 255)
    assert gate.use_crf(network, _opening) is want
    assert gate.report()["crf_on"] is want


def test_check_runs_once_per_support_and_again_after_a_change() -> None:
    calls = []

    def fused(img: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.ones(img.shape[:2], np.float32)

    gate = CRFGate()
    gate.add(*_shot("broad", 0))
    for _ in range(3):
        gate.use_crf(fused, lambda f, img: f)
    assert len(calls) == 1  # cached
    gate.add(*_shot("broad", 1))
    gate.use_crf(fused, lambda f, img: f)
    assert len(calls) == 3  # both shots checked again
    gate.reset()
    assert gate.shots == [] and gate.last is None


def test_threshold_change_reruns_and_no_shot_is_an_error() -> None:
    gate = CRFGate()
    with pytest.raises(RuntimeError, match="no support shots"):
        gate.use_crf(lambda img: img, lambda f, img: f)
    img, mask = _shot("broad", 0)
    gate.add(img, mask)
    half = np.where(mask, 0.6, 0.0).astype(np.float32)  # foreground at 0.5, nothing at 0.7
    assert gate.use_crf(lambda _: half, lambda f, _: f, 0.5) and gate.last == (1.0, 1.0)
    assert gate.use_crf(lambda _: half, lambda f, _: f, 0.7) and gate.last == (0.0, 0.0)


def test_disabled_gate_always_runs_the_crf_without_checking() -> None:
    gate = CRFGate(enabled=False)
    gate.add(*_shot("thin", 0))
    assert gate.use_crf(lambda img: 1 / 0, _opening) is True  # fused is never called
    assert gate.report() == {"enabled": False} and gate.shots == []  # nothing kept when disabled


def test_shots_are_copied() -> None:
    img, mask = _shot("broad", 0)
    gate = CRFGate()
    gate.add(img, mask)
    img[:] = 0  # a reused frame buffer
    assert gate.shots[0][0].any()
