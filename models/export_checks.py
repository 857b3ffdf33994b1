"""The accuracy checks `microfarm export` (``models.bundle_export``) runs on the ONNX models, and the frames it needs.

- ``FrameSource``: what the export takes from its caller for its checks: frames of the exploration bed and of
  segmentation scenes (``robot.export_cli`` renders them with ``sim.sample_frames``; ``models`` imports nothing
  of ``sim``);
- ``seg_episodes`` / ``seg_miou`` / ``reach_errors``: the task metrics that judge fp16 / int8 variants;
- ``session``, ``crf_agreement``, ``calib_feeds``, ``to_nchw``: ONNX Runtime sessions, the CRF's mask agreement, the
  int8 calibration feeds and the models' image layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["FrameSource", "seg_episodes", "seg_miou", "reach_errors", "session", "crf_agreement", "calib_feeds",
           "to_nchw"]


class FrameSource(Protocol):
    """Frames for the export's checks (``robot.export_cli.SimFrameSource``)."""

    def features(self, arm: str, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` frames of the exploration bed of ``arm`` at uniform random motor positions: (images uint8
        (n,size,size,3), motor float32 (n,2))."""
        ...

    def segmentation(self, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` frames of random bed layouts with species masks: (images uint8 (n,S,S,3), species uint8 (n,S,S))."""
        ...


def seg_episodes(species: np.ndarray, max_queries: int = 4) -> list[tuple[int, int, list[int]]]:
    """(species id, support frame, query frames) for every species seen in >= 2 frames with >= 20 pixels."""
    eps = []
    for s in range(1, int(species.max()) + 1):
        frames = [i for i in range(len(species)) if (species[i] == s).sum() >= 20]
        if len(frames) >= 2:
            eps.append((s, frames[0], frames[1:1 + max_queries]))
    return eps


def to_nchw(images: np.ndarray) -> np.ndarray:
    """(N,H,W,3) uint8 RGB -> (N,3,H,W) float32 in [0, 1]."""
    return images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)


def seg_miou(guide_fn: Any, segment_fn: Any, images: np.ndarray, species: np.ndarray) -> float:
    """Class-wise mIoU (percent) of 1-shot episodes built from rendered frames with ``seg_episodes``."""
    x = to_nchw(images)
    ious = []
    for s, sup, queries in seg_episodes(species):
        g = guide_fn(x[sup:sup + 1], (species[sup:sup + 1, None] == s).astype(np.float32))
        logits = segment_fn(x[queries], g)
        pred = logits[:, 1] > logits[:, 0]
        gt = species[queries] == s
        inter, union = (pred & gt).sum(), (pred | gt).sum()
        ious.append(inter / union if union else 1.0)
    return float(100.0 * np.mean(ious)) if ious else float("nan")


def reach_errors(enc: Any, fwd: Any, inv: Any, x: np.ndarray, motors: np.ndarray,
                 codes_ref: np.ndarray) -> dict[str, float]:
    """Reach error = mean |inverse(encode(frame)) - motor| (L2, normalised units); forward error vs fp32 codes."""
    codes = enc(x)
    return {"reach_error": float(np.linalg.norm(inv(codes) - motors, axis=1).mean()),
            "forward_error": float(np.linalg.norm(fwd(motors) - codes_ref, axis=1).mean())}


def session(path: Path) -> Any:
    """A CPU ONNX Runtime session of ``path`` as a function: ``run(*arrays)`` -> its first output."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(*arrays: np.ndarray) -> np.ndarray:
        return sess.run(None, {n: np.ascontiguousarray(a, np.float32) for n, a in zip(names, arrays, strict=True)})[0]

    return run


def crf_agreement(a: Any, b: Any, seg_data: Any) -> float:
    """The share of pixels whose CRF mask two CRF sessions agree on, on noisy masks of the first 4 frames."""
    imgs = seg_data[0][:4]
    x = imgs.transpose(0, 3, 1, 2).astype(np.float32)
    rng = np.random.default_rng(0)
    fg = np.clip((seg_data[1][:4, None] > 0) * 0.6 + 0.2 + rng.normal(0, 0.1, (len(imgs), 1, *imgs.shape[1:3])),
                 0.01, 0.99).astype(np.float32)
    p = np.concatenate([1 - fg, fg], 1)
    return float(((a(p, x)[:, 1] > 0.5) == (b(p, x)[:, 1] > 0.5)).mean())


def calib_feeds(name: str, entries: dict[str, Any], feat: Any, seg: Any, fp32: dict[str, Any]) -> list[dict]:
    """The int8 calibration inputs of model ``name`` from rendered frames (``feat``: features, ``seg``: scenes)."""
    if name in ("encoder", "forward", "inverse"):
        from models.autoencoder import preprocess

        imgs, motors = feat
        pre = entries["encoder"]["preprocess"]
        x = preprocess(imgs, pre["color"], pre["size"]).numpy()
        codes = fp32["encoder"](x)
        data = {"encoder": [{"image": x[i:i + 1]} for i in range(len(x))],
                "forward": [{"motor": motors[i:i + 1]} for i in range(len(motors))],
                "inverse": [{"code": codes[i:i + 1]} for i in range(len(codes))]}
        return data[name]
    imgs, species = seg
    x = to_nchw(imgs)
    feeds = []
    for i in range(len(x)):
        sid = int(species[i].max())
        m = (species[i:i + 1, None] == sid).astype(np.float32) if sid else np.ones((1, 1, *x.shape[2:]), np.float32)
        if name == "guide":
            feeds.append({"images": x[i:i + 1], "masks": m})
        else:
            feeds.append({"query": x[i:i + 1], "guide": fp32["guide"](x[i:i + 1], m)})
    return feeds
