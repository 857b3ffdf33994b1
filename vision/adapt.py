"""Adaptation to the examples: fine-tune a ``GuidedNet`` on the support shots themselves before a feed starts.

Episodes are made from the shots alone. With K >= 2 shots of a class, each episode's query is one shot and its
support the others (leave one out); with one shot, support and query are two different augmented views of it.
Every view is augmented (``vision.augment.strong_augment``: zoom, any rotation, flips, a crop near the
foreground, colour jitter, blur, noise; the colour transform shared within the episode), at ``size`` pixels.
Loss: cross-entropy + 0.5 soft Dice (``vision.train_data.seg_loss``), Adam. ``part`` "head" trains the fusion
and head layers only; "last" also the encoder's last blocks (EfficientNet-Lite0 blocks 8-10, stride 16; the
compact encoder's stride-16 stage) at a tenth of the learning rate. Batch-norm statistics stay fixed.

``adapt(model, classes, seconds=..., steps=...)`` returns a new model (the input is not changed) and a report;
``classes`` holds, per class, (images (H,W,3) uint8 RGB, masks (H,W) bool/0-1): one entry for a binary support,
K entries for a K-class one (each class against everything else, as the network was trained;
``vision.adapt_flags.support_classes`` builds it from a support's images and label masks). The command-line
flags (``AdaptFlags``) live in the torch-free ``vision.adapt_flags``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from microfarm_toolkit import UsageError
from models.guided_net import GuidedNet
from vision.adapt_flags import ADAPT_PARTS, AdaptFlags, AdaptPart, support_classes
from vision.augment import colour_shift, strong_augment
from vision.train_data import seg_loss

__all__ = ["adapt", "adapt_parameters", "support_classes", "AdaptFlags", "AdaptPart", "ADAPT_PARTS"]


def adapt_parameters(model: GuidedNet, part: str) -> list[dict[str, Any]]:
    """Optimiser parameter groups for ``part``: the head layers (lr x1) and, for "last", the encoder's last blocks
    (lr x0.1). Every other parameter is frozen (``requires_grad`` False)."""
    if part not in ADAPT_PARTS:
        raise UsageError(f"unknown adaptation part {part!r}; choose one of: {', '.join(ADAPT_PARTS)}")
    for p in model.parameters():
        p.requires_grad_(False)
    head = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    groups = [{"params": head, "lr_mult": 1.0}]
    if part == "last":
        enc = model.encoder
        last = list(enc.net._blocks[-3:].parameters()) if hasattr(enc, "net") else list(enc.high.parameters())
        groups.append({"params": last, "lr_mult": 0.1})
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    return groups


def _episode(classes: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]], rng: np.random.Generator,
             size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One augmented episode from the shots -> support [K',3,S,S] uint8, masks [K',1,S,S], query [3,S,S], mask [S,S]."""
    images, masks = classes[int(rng.integers(len(classes)))]
    k = len(images)
    j = int(rng.integers(k))
    sup = [i for i in range(k) if i != j] or [j]
    shared = colour_shift(rng, strong=False)
    pairs = [strong_augment(images[i], np.asarray(masks[i]).astype(np.uint8), rng, size, "strong", need_fg=True,
                            colour=shared) for i in [*sup, j]]
    s = np.stack([p[0] for p in pairs[:-1]]).transpose(0, 3, 1, 2)
    sm = np.stack([p[1] for p in pairs[:-1]])[:, None]
    return s, sm, pairs[-1][0].transpose(2, 0, 1), pairs[-1][1]


def adapt(model: GuidedNet, classes: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]],
          seconds: float = 0.0, steps: int = 0, part: str = "head", lr: float = 1e-3, batch: int = 4,
          size: int = 160, seed: int = 0, progress: bool = True) -> tuple[GuidedNet, dict[str, Any]]:
    """Fine-tune a copy of ``model`` on the support shots for ``seconds`` of wall time or ``steps`` steps (the first
    reached; at least one of them > 0) -> (the adapted model in eval mode, {"steps", "seconds", "loss_first",
    "loss_last", "part"}). Episodes of one class per item, ``batch`` items per step, all of one support size."""
    if not (seconds > 0 or steps > 0):
        raise UsageError(f"adaptation needs seconds > 0 or steps > 0 (got {seconds}, {steps})")
    if not classes or any(len(im) != len(m) or not im for im, m in classes):
        raise UsageError("adaptation needs, per class, as many masks as images and at least one shot")
    device = next(model.parameters()).device
    net = copy.deepcopy(model).to(device)
    groups = adapt_parameters(net, part)
    opt = torch.optim.Adam([{"params": g["params"], "lr": lr * g["lr_mult"]} for g in groups])
    net.train()
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    rng = np.random.default_rng([seed, 97])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps if steps > 0 else round(seconds), desc="adapt", unit="step" if steps > 0 else "s",
                   dynamic_ncols=True)
    losses: list[float] = []
    t0 = time.perf_counter()
    done = 0
    try:
        while True:
            eps = [_episode(classes, rng, size) for _ in range(batch)]
            kmin = min(e[0].shape[0] for e in eps)  # one support size per batch
            s = torch.from_numpy(np.stack([e[0][:kmin] for e in eps])).float().div_(255).to(device)
            sm = torch.from_numpy(np.stack([e[1][:kmin] for e in eps])).float().to(device)
            q = torch.from_numpy(np.stack([e[2] for e in eps])).float().div_(255).to(device)
            qm = torch.from_numpy(np.stack([e[3] for e in eps])).long().to(device)
            loss = seg_loss(net(s, sm, q), qm, 0.5)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
            done += 1
            elapsed = time.perf_counter() - t0
            if bar is not None:
                bar.update(1 if steps > 0 else min(round(elapsed), bar.total) - bar.n)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if (steps > 0 and done >= steps) or (seconds > 0 and elapsed >= seconds):
                break
    finally:
        if bar is not None:
            bar.close()
    for p in net.parameters():
        p.requires_grad_(True)
    k = max(1, len(losses) // 5)
    report = {"steps": done, "seconds": round(time.perf_counter() - t0, 2), "part": part,
              "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:]))}
    return net.eval(), report
