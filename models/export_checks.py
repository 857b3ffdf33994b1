"""The sample data `microfarm export` renders with our simulator, and the accuracy checks it runs on the ONNX models.

- ``write_demo_sources``: untrained weights in the layout of an exploration run + a segmenter file (tests, benchmarks);
- ``render_features`` / ``render_segmentation``: frames of the simulated bed (pybullet, export time only);
- ``seg_episodes`` / ``seg_miou`` / ``reach_errors``: the task metrics that judge fp16 / int8 variants;
- ``_session``, ``_crf_agreement``, ``_calib_feeds``: ONNX Runtime sessions, the CRF's mask agreement and the
  int8 calibration feeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from microfarm import UsageError

__all__ = ["write_demo_sources", "render_features", "render_segmentation", "seg_episodes", "seg_miou",
           "reach_errors"]


# -- sources ---------------------------------------------------------------------------------------------
def write_demo_sources(folder: str | Path, tiny: bool = True, seed: int = 0) -> tuple[Path, Path]:
    """Untrained weights in the layout of an exploration run + a segmenter file, for tests and benchmarks.

    tiny=False gives the real architectures (paper-preset autoencoder and MLPs, default GuidedNet), so that
    timings mean something. Returns (explore run folder, segmenter weights path).
    """
    import torch
    from safetensors.numpy import save_file

    from models.autoencoder import AutoencoderConfig, ConvAutoencoder
    from models.guided_net import GuidedNet, GuidedNetConfig, save_guided_net
    from models.mlp import forward_model, inverse_model
    from models.weights import save_weights

    torch.manual_seed(seed)
    folder = Path(folder)
    run = folder / "explore"
    ae_cfg = AutoencoderConfig(size=64, channels=(8, 8, 8), code_size=8) if tiny else AutoencoderConfig()
    hidden = (16, 16) if tiny else (320, 320)
    ae = ConvAutoencoder(ae_cfg)
    fwd, inv = forward_model(2, ae_cfg.code_size, hidden), inverse_model(2, ae_cfg.code_size, hidden)
    save_weights(run / "weights" / "autoencoder.safetensors", ae, ae_cfg.to_dict(), kind="autoencoder")
    save_weights(run / "weights" / "forward.safetensors", fwd, fwd.cfg.to_dict(), kind="forward_mlp")
    save_weights(run / "weights" / "inverse.safetensors", inv, inv.cfg.to_dict(), kind="inverse_mlp")
    goals = np.random.default_rng(seed).normal(0, 0.1, (9, ae_cfg.code_size)).astype(np.float32)
    (run / "checkpoint").mkdir(parents=True, exist_ok=True)
    save_file({"state/goals": goals}, str(run / "checkpoint" / "state.safetensors"),
              metadata={"state": json.dumps({"state": {"goals": "__array__"}})})
    (run / "summary.json").write_text(json.dumps({"config": {"arm": "gantry", "robot": "sim", "demo": True,
                                                             "untrained": True}, "iterations": 0}))
    seg = folder / "segmenter.safetensors"
    save_guided_net(GuidedNet(GuidedNetConfig(hidden=8) if tiny else GuidedNetConfig()), seg,
                    extra={"untrained": True})
    return run, seg


# -- rendered frames (export time only: pybullet is a dev-side dependency) --------------------------------
def render_features(arm: str, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames of the exploration bed at uniform random motor positions: (images uint8, motor float32)."""
    import gymnasium as gym

    import sim  # noqa: F401  (registers the envs)
    from microfarm import quiet_stderr

    env_id = {"gantry": "microfarm/GantryCamera-v0", "arm": "microfarm/ArmCamera-v0"}.get(arm)
    if env_id is None:
        raise UsageError(f"the exploration run's arm {arm!r} is not a simulated arm (gantry, arm)")
    motors = np.random.default_rng(seed).uniform(0, 1, (n, 2)).astype(np.float32)
    with quiet_stderr():
        env = gym.make(env_id, size=size).unwrapped
    try:
        env.reset(seed=seed)
        imgs = np.stack([env.step(m)[0]["image"] for m in motors])
    finally:
        env.close()
    return imgs, motors


def render_segmentation(size: int, n: int, seed: int, views: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """``n`` frames of random bed layouts with species masks: (images uint8 (n,S,S,3), species uint8 (n,S,S))."""
    import gymnasium as gym

    import sim  # noqa: F401
    from microfarm import quiet_stderr

    rng = np.random.default_rng(seed)
    with quiet_stderr():
        env = gym.make("microfarm/GantryCamera-v0", size=size, masks=True, scene_seed=None, randomize=True,
                       density=2.0).unwrapped
    imgs, masks = [], []
    try:
        while len(imgs) < n:
            env.reset(seed=int(rng.integers(2**31)))
            for _ in range(views):
                obs, _, _, _, info = env.step(rng.uniform(0.1, 0.9, 2).astype(np.float32))
                imgs.append(obs["image"])
                masks.append(info["species_mask"])
    finally:
        env.close()
    return np.stack(imgs[:n]), np.stack(masks[:n])


def seg_episodes(species: np.ndarray, max_queries: int = 4) -> list[tuple[int, int, list[int]]]:
    """(species id, support frame, query frames) for every species seen in >= 2 frames with >= 20 pixels."""
    eps = []
    for s in range(1, int(species.max()) + 1):
        frames = [i for i in range(len(species)) if (species[i] == s).sum() >= 20]
        if len(frames) >= 2:
            eps.append((s, frames[0], frames[1:1 + max_queries]))
    return eps


def _to_nchw(images: np.ndarray) -> np.ndarray:
    return images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)


def seg_miou(guide_fn: Any, segment_fn: Any, images: np.ndarray, species: np.ndarray) -> float:
    """Class-wise mIoU (percent) of 1-shot episodes built from rendered frames with ``seg_episodes``."""
    x = _to_nchw(images)
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


def _session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(*arrays: np.ndarray) -> np.ndarray:
        return sess.run(None, {n: np.ascontiguousarray(a, np.float32) for n, a in zip(names, arrays, strict=True)})[0]

    return run


def _crf_agreement(a: Any, b: Any, seg_data: Any) -> float:
    imgs = seg_data[0][:4]
    x = imgs.transpose(0, 3, 1, 2).astype(np.float32)
    rng = np.random.default_rng(0)
    fg = np.clip((seg_data[1][:4, None] > 0) * 0.6 + 0.2 + rng.normal(0, 0.1, (len(imgs), 1, *imgs.shape[1:3])),
                 0.01, 0.99).astype(np.float32)
    p = np.concatenate([1 - fg, fg], 1)
    return float(((a(p, x)[:, 1] > 0.5) == (b(p, x)[:, 1] > 0.5)).mean())


def _calib_feeds(name: str, entries: dict[str, Any], feat: Any, seg: Any, fp32: dict[str, Any]) -> list[dict]:
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
    x = _to_nchw(imgs)
    feeds = []
    for i in range(len(x)):
        sid = int(species[i].max())
        m = (species[i:i + 1, None] == sid).astype(np.float32) if sid else np.ones((1, 1, *x.shape[2:]), np.float32)
        if name == "guide":
            feeds.append({"images": x[i:i + 1], "masks": m})
        else:
            feeds.append({"query": x[i:i + 1], "guide": fp32["guide"](x[i:i + 1], m)})
    return feeds
