"""`microfarm train-encoder`: train the convolutional autoencoder (models.autoencoder) on a features dataset.

    microfarm train-encoder --data DIR [--weights FILE] [--out RUN_DIR] [--epochs 50] [--batch-size 16] ...

Reads ``DIR/features.npz`` (``images`` (N,H,W,3) uint8, written by ``microfarm render --task features``),
trains with Adam and MSE (the paper: 50 epochs, batch 16), holds out ``--val-fraction`` for a validation
curve, and writes into the run folder ``encoder.safetensors`` (config in its metadata), ``loss.png``,
``reconstructions.png`` (inputs above their reconstructions) and ``summary.json``; ``--weights FILE`` also
writes the weights there (e.g. ``models/weights/encoder.safetensors``, the default of both arms).
``--info-plane-every N`` (N >= 1) also writes ``info_plane.csv`` and ``info_plane.png``: MINE estimates of I(X;T) and
I(T;Y) for every hidden layer T (X = input, Y = reconstruction) at epoch 0, every N epochs and at the end
(robot.info_plane; docs/science.md section 6).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from microfarm_toolkit import UsageError, atomic_path, atomic_write_json, next_run_dir, parse_config
from models.autoencoder import AutoencoderConfig, ConvAutoencoder, preprocess
from models.weights import save_weights
from robot.info_plane import info_plane_rows, write_info_plane

__all__ = ["TrainEncoderConfig", "train_encoder", "cli"]


def _f(default: object, help: str) -> object:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class TrainEncoderConfig:
    """Train the convolutional autoencoder on a features dataset."""

    data: list[Path] = dataclasses.field(default_factory=list, metadata={
        "help": "features dataset folder (microfarm render --task features); several are concatenated"})
    out: Path | None = _f(None, "run folder (default runs/train-encoder/<N>)")
    weights: Path | None = _f(None, "also write the weights here (e.g. models/weights/encoder.safetensors)")
    epochs: int = _f(50, "epochs")
    batch_size: int = _f(16, "batch size")
    lr: float = _f(1e-3, "Adam learning rate")
    size: int = _f(64, "input side in pixels")
    color: Literal["gray", "rgb"] = _f("gray", "input colour")
    channels: list[int] = dataclasses.field(default_factory=lambda: [256, 128, 128],
                                            metadata={"help": "encoder conv widths"})
    code_size: int = _f(32, "code length")
    val_fraction: float = _f(0.1, "held-out fraction for the validation loss")
    seed: int = _f(0, "seed of init and shuffling")
    threads: int = _f(2, "torch threads")
    progress: bool = _f(True, "show a progress bar")
    info_plane_every: int = _f(0, "MINE information plane (info_plane.csv/.png) at epoch 0, every N epochs and at "
                                  "the end (0 = off)")
    mine_steps: int = _f(300, "MINE training steps per estimate")
    mine_samples: int = _f(512, "training images used by the information plane (at most the training set)")


def _load(data: Path) -> np.ndarray:
    path = Path(data) / "features.npz"
    if not path.is_file():
        raise UsageError(f"no features dataset at {str(data)!r} (missing features.npz); render one with "
                         "`microfarm render --task features --arm gantry --out DIR`")
    return np.load(path)["images"]


def train_encoder(cfg: TrainEncoderConfig) -> Path:
    """Train and write the outputs (see module doc); returns the run folder."""
    if not cfg.data:
        raise UsageError("--data DIR is required (a features dataset)")
    if cfg.epochs < 1 or cfg.batch_size < 1 or not 0 <= cfg.val_fraction < 1:
        raise UsageError("--epochs and --batch-size must be >= 1 and --val-fraction in [0, 1)")
    if cfg.info_plane_every < 0 or cfg.mine_steps < 1 or cfg.mine_samples < 8:
        raise UsageError("--info-plane-every must be >= 0, --mine-steps >= 1 and --mine-samples >= 8")
    try:
        ae_cfg = AutoencoderConfig(cfg.size, cfg.color, tuple(cfg.channels), cfg.code_size)
    except ValueError as e:
        raise UsageError(str(e)) from None
    images = np.concatenate([_load(d) for d in cfg.data])
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    x = preprocess(images, ae_cfg.color, ae_cfg.size)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(x))
    n_val = int(round(cfg.val_fraction * len(x))) if len(x) > 1 else 0
    xv, xt = x[order[:n_val]], x[order[n_val:]]
    if cfg.info_plane_every and min(len(xt), cfg.mine_samples) < 8:  # checked before anything is written
        raise UsageError(f"the information plane needs >= 8 training images, the dataset leaves {len(xt)}")
    out = next_run_dir("train-encoder", cfg.out)
    ae = ConvAutoencoder(ae_cfg)
    opt = torch.optim.Adam(ae.parameters(), lr=cfg.lr)
    hist: dict[str, list[float]] = {"train": [], "val": []}
    t0 = time.perf_counter()
    xi, info_rows = xt[:cfg.mine_samples], []
    if cfg.info_plane_every:
        info_rows += info_plane_rows(ae, xi, 0, cfg.mine_steps, cfg.seed)
    bar = tqdm(range(cfg.epochs), desc="train-encoder", unit="epoch", disable=not cfg.progress)
    for epoch in bar:
        ae.train()
        perm, tot = torch.from_numpy(rng.permutation(len(xt))), 0.0
        for s in range(0, len(xt), cfg.batch_size):
            b = xt[perm[s:s + cfg.batch_size]]
            loss = torch.mean((ae(b) - b) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        hist["train"].append(tot / max(len(xt), 1))
        if n_val:
            ae.eval()
            with torch.no_grad():
                hist["val"].append(float(torch.mean((ae(xv) - xv) ** 2)))
        bar.set_postfix(loss=f"{hist['train'][-1]:.5f}", refresh=False)
        if cfg.info_plane_every and ((epoch + 1) % cfg.info_plane_every == 0 or epoch + 1 == cfg.epochs):
            info_rows += info_plane_rows(ae, xi, epoch + 1, cfg.mine_steps, cfg.seed)
            write_info_plane(out, info_rows)  # rewritten at every point: a stopped run keeps its plane so far
    if not np.isfinite(hist["train"][-1]):
        raise RuntimeError(f"autoencoder training diverged (loss {hist['train'][-1]}); lower --lr")
    path = save_weights(out / "encoder.safetensors", ae, ae_cfg.to_dict(), kind="autoencoder",
                        extra={"data": [str(d) for d in cfg.data], "epochs": cfg.epochs,
                               "final_loss": hist["train"][-1]})
    if cfg.weights is not None:
        Path(cfg.weights).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cfg.weights) as tmp:
            shutil.copyfile(path, tmp)
    _plots(out, ae, xv if n_val else xt, hist)
    atomic_write_json(out / "summary.json", {"config": dataclasses.asdict(cfg), "n_train": len(xt), "n_val": n_val,
                                             "loss": hist, "wall_time_s": round(time.perf_counter() - t0, 2)})
    return out


def _plots(out: Path, ae: ConvAutoencoder, x: torch.Tensor, hist: dict[str, list[float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(1, len(hist["train"]) + 1), hist["train"], label="train")
    if hist["val"]:
        ax.plot(range(1, len(hist["val"]) + 1), hist["val"], label="validation")
    ax.set(xlabel="epoch", ylabel="MSE", yscale="log", title="autoencoder loss")
    ax.legend()
    fig.savefig(out / "loss.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    k = min(8, len(x))
    with torch.no_grad():
        rec = ae.eval()(x[:k])
    fig, axs = plt.subplots(2, k, figsize=(1.5 * k, 3.2), squeeze=False)
    for i in range(k):
        for r, img in enumerate((x[i], rec[i])):
            a = axs[r, i]
            arr = img.numpy()
            a.imshow(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            a.axis("off")
        axs[0, i].set_title("input" if i == 0 else "", fontsize=8)
        axs[1, i].set_title("reconstruction" if i == 0 else "", fontsize=8)
    fig.savefig(out / "reconstructions.png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def cli(argv: list[str]) -> int:
    cfg = parse_config(TrainEncoderConfig, argv, prog="microfarm train-encoder")
    out = train_encoder(cfg)
    print(f"encoder written to {out / 'encoder.safetensors'}" + (f" and {cfg.weights}" if cfg.weights else ""))
    return 0
