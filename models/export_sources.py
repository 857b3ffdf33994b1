"""What `microfarm export` (``models.bundle_export``) reads: an exploration run's models, goals and motor contract,
the segmenter weights (``DEFAULT_SEGMENTER``: the shipped file); and ``write_demo_sources``, untrained weights in the
same layouts for tests and benchmarks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from microfarm_toolkit import UsageError

__all__ = ["DEFAULT_SEGMENTER", "load_explore_run", "config_hash", "write_demo_sources"]

DEFAULT_SEGMENTER = Path(__file__).resolve().parent / "weights" / "segmenter.safetensors"


def config_hash(cfg: Any) -> str:
    """The first 16 hex digits of the sha256 of a config's JSON (keys sorted): the bundle's training record."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_explore_run(run: Path) -> dict[str, Any]:
    """Autoencoder, forward, inverse, goals, motor contract and training config of an exploration run."""
    from safetensors.numpy import load_file

    from models.autoencoder import AutoencoderConfig, ConvAutoencoder
    from models.mlp import MLP, MLPConfig
    from models.weights import WeightsError, load_into, read_metadata

    run = Path(run)
    wdir = run / "weights"
    names = {"autoencoder": "autoencoder", "forward": "forward_mlp", "inverse": "inverse_mlp"}
    if not run.is_dir():
        raise UsageError(f"--explore-run {str(run)!r} is not a folder; pass a finished `microfarm explore` run")
    missing = [n for n in names if not (wdir / f"{n}.safetensors").is_file()]
    if missing:
        raise UsageError(f"--explore-run {str(run)!r} has no weights/{missing[0]}.safetensors (the run has not "
                         "finished?); finish it or resume it with `microfarm explore --resume DIR`")
    try:
        ae = ConvAutoencoder(AutoencoderConfig.from_dict(read_metadata(wdir / "autoencoder.safetensors")["config"]))
        load_into(ae, wdir / "autoencoder.safetensors", kind="autoencoder")
        mlps = {}
        for n in ("forward", "inverse"):
            m = MLP(MLPConfig.from_dict(read_metadata(wdir / f"{n}.safetensors")["config"]))
            load_into(m, wdir / f"{n}.safetensors", kind=names[n])
            mlps[n] = m.eval()
    except (WeightsError, KeyError, ValueError) as e:
        raise UsageError(f"--explore-run {str(run)!r}: unusable weights ({e})") from None
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    train_cfg = summary.get("config", {})
    goals = None
    ck = run / "checkpoint" / "state.safetensors"
    if ck.is_file():
        goals = load_file(str(ck)).get("state/goals")
    motor: dict[str, Any] = {}
    if (run / "export" / "manifest.json").is_file():
        motor = json.loads((run / "export" / "manifest.json").read_text()).get("motor", {})
    dim = mlps["forward"].cfg.in_dim
    motor = {"robot": train_cfg.get("robot", "sim"), "arm": train_cfg.get("arm", "gantry"),
             "low": [0.0] * dim, "high": [1.0] * dim, "dim": dim, **motor}
    return {"ae": ae.eval(), "forward": mlps["forward"], "inverse": mlps["inverse"],
            "goals": None if goals is None else np.asarray(goals, np.float32), "motor": motor,
            "training": {"config": train_cfg, "config_hash": config_hash(train_cfg), "run": str(run),
                         "iterations": summary.get("iterations")}}


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
