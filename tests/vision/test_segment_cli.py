"""`microfarm segment`: runs on a generated video, a folder and `sim`; bad input exits 2 with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from microfarm import main as microfarm_main
from tests.conftest import ROOT, write_support


@pytest.fixture(scope="module")
def support(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_support(tmp_path_factory.mktemp("support"))


def _run(args: list[str]) -> int:
    return microfarm_main(["segment", *args])


def test_folder_source_writes_masks_and_summary(tmp_path: Path, weights: Path, support: str) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"f{i}.png"), np.full((40, 50, 3), 60 * i, np.uint8))
    (frames / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="not an image"):
        assert _run(["--support", support, "--source", str(frames), "--weights", str(weights), "--imgsz", "32",
                     "--out", str(out), "--save-overlay"]) == 0
    for i in range(3):
        m = cv2.imread(str(out / "masks" / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
        assert m.shape == (40, 50) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
        assert (out / "overlays" / f"f{i}.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3 and set(summary["foreground_fraction"]) == {"f0", "f1", "f2"}
    assert summary["fps"] > 0 and summary["scales"] == [1.0] and summary["input_sides"] == [32]


def test_video_source_with_stride_and_overlay_video(tmp_path: Path, weights: Path, support: str) -> None:
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(6):
        writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    assert _run(["--support", support, "--source", str(video), "--weights", str(weights), "--imgsz", "32",
                 "--vid-stride", "2", "--save-overlay", "--crf", "dense", "--out", str(out)]) == 0
    names = sorted(p.name for p in (out / "masks").iterdir())
    assert names == ["frame_000000.png", "frame_000002.png", "frame_000004.png"]
    assert cv2.imread(str(out / "masks" / names[0]), cv2.IMREAD_UNCHANGED).shape == (48, 64)
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_sim_source_stops_after_max_frames(tmp_path: Path, weights: Path, support: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _run(["--support", support, "--source", "sim", "--weights", str(weights), "--imgsz", "32",
                 "--max-frames", "3", "--crf", "meanfield", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3 and summary["stopped"] == "--max-frames reached"
    gate = summary["crf_gate"]  # the CRF gate's check on the support, printed and kept in the summary
    assert gate["enabled"] and gate["crf_on"] == (gate["support_iou_with_crf"] >= gate["support_iou_without_crf"])
    assert f"-> CRF {'on' if gate['crf_on'] else 'off'}" in capsys.readouterr().out
    assert _run(["--support", support, "--source", "sim", "--weights", str(weights), "--imgsz", "32",
                 "--max-frames", "1", "--crf", "meanfield", "--no-crf-gate", "--out", str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["crf_gate"] == {"enabled": False}
    assert "CRF check" not in capsys.readouterr().out



def test_fusion_fit_records_the_weights_fitted_on_the_support(tmp_path: Path, weights: Path, support: str) -> None:
    """Two shots (one shot keeps the blend: nothing held out), the fit and its support check in summary.json."""
    out = tmp_path / "out"
    assert _run(["--support", support, "--support", support, "--source", "sim", "--weights", str(weights),
                 "--imgsz", "32", "--max-frames", "2", "--fusion", "fit", "--out", str(out)]) == 0
    fusion = json.loads((out / "summary.json").read_text())["fusion"]
    assert fusion["mode"] == "fit" and set(fusion["classes"]) == {"foreground"}
    fit = fusion["classes"]["foreground"]
    assert 0 <= fit["support_iou_blend"] <= 1 and 0 <= fit["support_iou_fit"] <= 1
    assert (fit["weights"] is None) == (fit["support_iou_fit"] < fit["support_iou_blend"])
    if fit["weights"] is not None:
        assert set(fit["weights"]) == {"net", "colour", "exg", "exg_cue", "bias"}


def test_crf_gate_off_is_printed_and_recorded(tmp_path: Path, weights: Path, support: str,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A CRF that erases everything on the support is turned off, said before the first frame, and masks are
    the network's; --crf none records no gate."""
    from vision.predictor import FewShotSegmenter

    monkeypatch.setattr(FewShotSegmenter, "fused", lambda self, rgb: np.full(rgb.shape[:2], 0.9, np.float32))
    monkeypatch.setattr(FewShotSegmenter, "refine", lambda self, fg, rgb: np.zeros_like(fg))
    out = tmp_path / "out"
    assert _run(["--support", support, "--source", "sim", "--weights", str(weights), "--imgsz", "32",
                 "--max-frames", "2", "--out", str(out)]) == 0  # the default: --crf meanfield, gated
    assert "-> CRF off (it would erase part of the examples" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["crf"] == "meanfield" and summary["crf_gate"]["crf_on"] is False
    assert summary["crf_gate"]["support_iou_with_crf"] == 0.0
    assert (cv2.imread(str(out / "masks" / "frame_000000.png"), 0) == 255).all()  # 0.9 everywhere, no CRF
    assert _run(["--support", support, "--source", "sim", "--weights", str(weights), "--imgsz", "32",
                 "--max-frames", "1", "--crf", "none", "--scales", "1", "--scales", "1.5",
                 "--out", str(tmp_path / "o2")]) == 0
    o2 = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert o2["crf_gate"] is None and o2["scales"] == [1.0, 1.5] and o2["input_sides"] == [32, 48]
    assert summary["fusion"]["mode"] == "fit" and summary["fusion"]["colour_prior"] == 0.5  # the default
    assert cv2.imread(str(out / "masks" / "frame_000000.png"), cv2.IMREAD_UNCHANGED).shape == (32, 32)


@pytest.mark.parametrize(("make", "message"), [
    (lambda d, s, w: ["--support", f"{d}/missing.png:{d}/mask.png", "--source", "sim"], "does not exist"),
    (lambda d, s, w: ["--support", f"{d}/img.png", "--source", "sim"], "must be IMG:MASK"),
    (lambda d, s, w: ["--support", f"{d}/img.png:{d}/small.png", "--source", "sim"], "--resize-masks"),
    (lambda d, s, w: ["--support", f"{d}/img.png:{d}/empty.png", "--source", "sim"], "mask"),
    (lambda d, s, w: ["--support", f"{d}/img.png:{d}/junk.png", "--source", "sim"], "cannot read image"),
    (lambda d, s, w: ["--support", s, "--source", f"{d}/nothing.mp4"], "is not a webcam index, file"),
    (lambda d, s, w: ["--support", s, "--source", f"{d}/junk.png"], "cannot read image"),
    (lambda d, s, w: ["--support", s, "--source", f"{d}/broken.mp4"], "cannot open video source"),
    (lambda d, s, w: ["--support", s, "--source", "7"], "no webcam at index 7"),
    (lambda d, s, w: ["--support", s, "--source", "sim", "--crf", "fancy"], "choose one of: none, dense, meanfield"),
    (lambda d, s, w: ["--support", s, "--source", "sim", "--weights", f"{d}/none.safetensors"], "no segmenter weights"),
    (lambda d, s, w: ["--support", s], "--source is required"),
    (lambda d, s, w: ["--support", s, "--source", "sim", "--crf-window", "4"], "--crf-window"),
    (lambda d, s, w: ["--support", s, "--source", "sim", "--crf-bilateral-srgb", "0"], "--crf-bilateral-srgb"),
    (lambda d, s, w: ["--support", s, "--source", "sim", "--colour-prior", "-0.5"], "--colour-prior must be in [0, 1]"),
    (lambda d, s, w: ["--support", s, "--source", "sim", "--scales", "0"], "--scales 0 is not valid"),
    (lambda d, s, w: ["--support", s, "--source", "sim", "--scales", "20"], "--scales 20 is not valid"),
    (lambda d, s, w: ["--support", s, "--source", "sim", "--scales", "two"], "--scales expects float"),
    (lambda d, s, w: ["--support", s, "--source", "sim", "--fusion", "mean"], "--fusion"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, weights: Path, support: str, make, message: str) -> None:
    d = tmp_path
    cv2.imwrite(str(d / "img.png"), np.zeros((20, 20, 3), np.uint8))
    cv2.imwrite(str(d / "small.png"), np.full((10, 10), 255, np.uint8))
    cv2.imwrite(str(d / "empty.png"), np.zeros((20, 20), np.uint8))
    (d / "junk.png").write_bytes(b"not a png")
    (d / "broken.mp4").write_bytes(b"not a video")
    args = make(d, support, weights)
    if "--weights" not in args:
        args += ["--weights", str(weights)]
    out = d / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    proc = subprocess.run([sys.executable, "-m", "microfarm", "segment", *args, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert (out / "keep.txt").read_text() == "earlier result"


class _DroppingCapture:
    """A stand-in for cv2.VideoCapture of a live stream: each opening serves the next count of ``plan`` frames,
    then reads fail (the stream drops); an opening past the plan fails."""

    plan: list[int] = []
    opened = 0

    def __init__(self, target: object) -> None:
        cls = type(self)
        self.left = cls.plan[cls.opened] if cls.opened < len(cls.plan) else -1
        cls.opened += 1

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.left >= 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left <= 0:
            return False, None
        self.left -= 1
        return True, np.full((24, 32, 3), 90, np.uint8)

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        self.left = 0


@pytest.mark.parametrize(("plan", "frames", "rc"), [([3, 2], 5, 2), ([3, 0, 0, 2], 5, 2), ([2], 2, 2)])
def test_a_dropping_stream_reconnects_with_backoff_then_exits_2(tmp_path: Path, weights: Path, support: str,
                                                                 monkeypatch, capsys, plan, frames, rc) -> None:
    """The stream is reopened after a drop (waits 0.5, 1, 2 s: exponential backoff) and the frames that come
    back are segmented; after 3 failed reconnects in a row it stops with exit 2 and one line, keeping the masks
    written so far and a summary that says why it stopped."""
    import vision.sources as sources

    waits: list[float] = []
    monkeypatch.setattr(sources.time, "sleep", waits.append)
    monkeypatch.setattr(sources.cv2, "VideoCapture", _DroppingCapture)
    monkeypatch.setattr(_DroppingCapture, "plan", plan)
    monkeypatch.setattr(_DroppingCapture, "opened", 0)
    out = tmp_path / "out"
    assert _run(["--support", support, "--source", "rtsp://camera/feed", "--weights", str(weights),
                 "--out", str(out)]) == rc
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dropped and did not come back after 3 reconnects" in err[0]
    assert len(list((out / "masks").glob("frame_*.png"))) == frames
    assert waits[-3:] == [0.5, 1.0, 2.0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == frames and summary["stopped"].startswith("error: stream")
