"""The data side of `microfarm train-segmenter` (``vision.train``): the episode pipeline, the loss and the log.

- ``EpisodeData``: item ``i`` -> one augmented training episode (a module-level class, so DataLoader worker
  processes can pickle it); ``StepBatches``: the item indices of each step for one process of a
  data-parallel run;
- ``seg_loss``: cross-entropy + soft Dice on the foreground, ``IGNORE`` pixels left out; ``edm_loss``: the mean EDM
  decorrelation penalty over the tapped layers (``models.veca``);
- ``veca_batch`` / ``veca_row``: VECA of the guided net's taps on a fixed batch of training episodes, for the log;
- ``read_log`` / ``flush_log`` / ``write_plots``: ``log.csv`` and its ``loss.png`` / ``val_miou.png``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from microfarm_toolkit import UsageError, atomic_write_text
from vision.augment import colour_shift, strong_augment
from vision.episodes import EpisodeSampler, SegmentationDataset

if TYPE_CHECKING:
    from vision.train_config import TrainConfig

__all__ = ["EpisodeData", "StepBatches", "seg_loss", "edm_loss", "veca_batch", "veca_row", "IGNORE", "LOG_FIELDS",
           "VECA_FIELDS", "read_log", "flush_log", "write_plots"]

IGNORE = 2  # target value of pixels the loss ignores (held-out species in training queries)


# -- episodes ---------------------------------------------------------------------------------------------
class EpisodeData(torch.utils.data.Dataset):
    """Item ``i`` -> one augmented training episode; ``i // per_step`` is the step, which fixes K."""

    def __init__(self, dataset: SegmentationDataset, folds: list[int], cfg: TrainConfig, per_step: int) -> None:
        self.cfg, self.per_step = cfg, per_step
        shots = [k for k in range(1, cfg.shots + 1)]
        self.samplers = {}
        for k in shots:
            try:
                self.samplers[k] = EpisodeSampler(dataset, folds, shots=k, min_pixels=cfg.min_pixels,
                                                  seed=cfg.seed + 1000 * k, size=None, augment=False)
            except UsageError:
                if k == 1:
                    raise
        self.ks = sorted(self.samplers)
        self.dataset = dataset
        self.ignore = sorted(set(dataset.fold_classes(range(len(dataset.folds)))) - set(dataset.fold_classes(folds)))
        self.groups = self._groups(dataset.fold_classes(folds)) if cfg.group_prob > 0 else {}
        self.real = None
        if cfg.real_prob > 0:
            from vision.real_episodes import RealEpisodes

            self.real = RealEpisodes(cfg.real_root, min_pixels=cfg.real_min_pixels, seed=cfg.seed)

    def _groups(self, train_ids: list[int]) -> dict[str, tuple[list[int], list[int]]]:
        """Group name -> (its training species ids, frames with >= min_pixels of them), for groups with enough
        frames: ``plants`` (every training species), ``crops``, ``weeds`` (``sim.species``' kinds)."""
        kinds = {int(s["id"]): s.get("kind") for s in self.dataset.species}
        groups = {"plants": train_ids, "crops": [c for c in train_ids if kinds.get(c) == "crop"],
                  "weeds": [c for c in train_ids if kinds.get(c) == "weed"]}
        out = {}
        for name, ids in groups.items():
            pool = [j for j, px in enumerate(self.dataset.pixels)
                    if sum(px.get(c, 0) for c in ids) >= self.cfg.min_pixels]
            if ids and len(pool) > self.cfg.shots:
                out[name] = (ids, pool)
        return out

    def __len__(self) -> int:
        return self.cfg.steps * self.per_step

    def shots_of(self, step: int) -> int:
        return self.ks[int(np.random.default_rng([self.cfg.seed, step, 11]).integers(len(self.ks)))]

    def _sim_episode(self, i: int, k: int, rng: np.random.Generator
                     ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray, bool]:
        """A rendered episode of one species (or, with ``group_prob``, of a group): support images and 0/1 masks,
        the query image and its mask (0/1/IGNORE), and whether the query is a frame without the class."""
        if self.groups and rng.random() < self.cfg.group_prob:
            return self._group_episode(i, k, rng)
        ep = self.samplers[k].episode(i)
        qframe, qimage, qmask = ep.frames[-1], ep.query_image, ep.query_mask
        absent = self.cfg.absent_prob > 0 and rng.random() < self.cfg.absent_prob
        if absent:  # a frame without the species: every pixel is background
            j = self.samplers[k].absent_frame(i, ep.class_id)
            if j is None:
                absent = False
            else:
                qframe, qimage = j, self.dataset.image(j)
                qmask = np.zeros(qimage.shape[:2], np.uint8)
        if self.cfg.ignore_heldout and self.ignore:
            qmask = qmask.copy()
            qmask[np.isin(self.dataset.species_mask(qframe), self.ignore)] = IGNORE
        return ep.support_images, ep.support_masks, qimage, qmask, absent

    def _group_episode(self, i: int, k: int, rng: np.random.Generator
                       ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray, bool]:
        """An episode whose class is a group of the training species: every plant, the crops, or the weeds."""
        name = sorted(self.groups)[int(rng.integers(len(self.groups)))]
        ids, pool = self.groups[name]
        frames = [int(j) for j in rng.choice(pool, size=k + 1, replace=False)]
        maps = [self.dataset.species_mask(j) for j in frames]
        masks = [np.isin(m, ids).astype(np.uint8) for m in maps]
        if self.cfg.ignore_heldout and self.ignore:
            masks[-1][np.isin(maps[-1], self.ignore)] = IGNORE
        images = [self.dataset.image(j) for j in frames]
        return images[:k], masks[:k], images[k], masks[k], False

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        k = self.shots_of(i // self.per_step)
        rng = np.random.default_rng([self.cfg.seed, i, 23])
        if self.real is not None and np.random.default_rng([self.cfg.seed, i, 41]).random() < self.cfg.real_prob:
            _, simgs, smasks, qimage, qmask = self.real.episode(i, k)
            absent = False
        else:
            simgs, smasks, qimage, qmask, absent = self._sim_episode(i, k, rng)
        shared = colour_shift(rng, self.cfg.augment == "strong") if self.cfg.colour == "episode" else None
        sup = [strong_augment(im, m, rng, self.cfg.imgsz, self.cfg.augment, need_fg=True, colour=shared)
               for im, m in zip(simgs, smasks, strict=True)]
        q, qm = strong_augment(qimage, qmask, rng, self.cfg.imgsz, self.cfg.augment, need_fg=not absent,
                               colour=shared)
        s = torch.from_numpy(np.stack([a for a, _ in sup])).permute(0, 3, 1, 2)  # [K,3,S,S] uint8
        sm = torch.from_numpy(np.stack([b for _, b in sup]))[:, None]  # [K,1,S,S] uint8
        return s, sm, torch.from_numpy(q).permute(2, 0, 1), torch.from_numpy(qm)


class StepBatches(torch.utils.data.Sampler):
    """Batches of item indices for steps ``start..steps-1`` of this process (rank) of ``world``."""

    def __init__(self, start: int, steps: int, batch: int, rank: int, world: int) -> None:
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self):
        per_step = self.batch * self.world
        for step in range(self.start, self.steps):
            base = step * per_step + self.rank * self.batch
            yield list(range(base, base + self.batch))


# -- loss -------------------------------------------------------------------------------------------------
def seg_loss(logits: torch.Tensor, target: torch.Tensor, dice: float) -> torch.Tensor:
    """Cross-entropy + ``dice`` x soft Dice of the foreground. logits [B,2,H,W], target [B,H,W] long in
    {0, 1, IGNORE}; IGNORE pixels count in neither term."""
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    if dice <= 0:
        return ce
    valid = (target != IGNORE).float()
    p = torch.softmax(logits, 1)[:, 1] * valid
    t = (target == 1).float()
    inter = (p * t).sum((1, 2))
    d = 1 - (2 * inter + 1) / (p.sum((1, 2)) + t.sum((1, 2)) + 1)
    return ce + dice * d.mean()


def edm_loss(outputs: dict[str, torch.Tensor], groups: int) -> torch.Tensor:
    """The mean of ``models.veca.edm_penalty`` over the tapped layers' outputs (name -> [N,C,h,w], with graph)."""
    from models.veca import edm_penalty

    return torch.stack([edm_penalty(x, groups) for x in outputs.values()]).mean()


# -- VECA -------------------------------------------------------------------------------------------------
VECA_LAYERS = ("mid", "high", "low", "head")
VECA_FIELDS = [f"{p}_{n}" for p in ("veca", "nveca") for n in VECA_LAYERS]


def veca_batch(dataset: SegmentationDataset, folds: list[int], cfg: TrainConfig
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``cfg.veca_episodes`` fixed 1-shot training episodes (unaugmented, at ``cfg.imgsz``): support [E,1,3,S,S],
    masks [E,1,1,S,S], query [E,3,S,S], float in [0, 1]."""
    sampler = EpisodeSampler(dataset, folds, shots=1, min_pixels=cfg.min_pixels, seed=cfg.seed + 555,
                             size=cfg.imgsz)
    eps = [sampler.episode(i) for i in range(cfg.veca_episodes)]
    s = torch.from_numpy(np.stack([e.support_images[0] for e in eps])).permute(0, 3, 1, 2).float().div(255)
    m = torch.from_numpy(np.stack([e.support_masks[0] for e in eps])).float()
    q = torch.from_numpy(np.stack([e.query_image for e in eps])).permute(0, 3, 1, 2).float().div(255)
    return s[:, None], m[:, None, None], q


@torch.no_grad()
def veca_row(model: torch.nn.Module, batch: tuple[torch.Tensor, ...], device: torch.device) -> dict[str, str]:
    """VECA (``veca_*``) and mean-normalised VECA (``nveca_*``) of the guided net's taps (``models.veca``: encoder
    levels over support + query images, the head's hidden layer over the queries; every position a sample) on
    ``batch`` (``veca_batch``), in eval mode (the caller re-freezes batch norms if it keeps them frozen)."""
    from models.veca import LayerTaps, guided_net_layers, veca

    was = model.training
    model.eval()
    with LayerTaps(guided_net_layers(model)) as taps:
        model(*(t.to(device) for t in batch))
        row = {}
        for name, x in taps.outputs.items():
            row[f"veca_{name}"] = f"{veca(x):.6g}"
            row[f"nveca_{name}"] = f"{veca(x, normalise=True):.6g}"
    model.train(was)
    return row


# -- log --------------------------------------------------------------------------------------------------
def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of ``log.csv`` (none if it does not exist yet)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


LOG_FIELDS = ["step", "loss", "lr", "shots", "val_miou", "val_fb_iou", "seconds", "val_loss", "edm", *VECA_FIELDS]


def write_plots(out: Path, rows: list[dict[str, str]]) -> None:
    """``loss.png`` and (with validation rows) ``val_miou.png`` of the log rows, in ``out``."""
    from vision.plots import plot_curve

    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    plot_curve(out / "loss.png", steps, [float(r["loss"]) for r in rows], "loss (CE + Dice)", "training loss",
               smooth=min(50, max(2, len(rows) // 20)))
    val = [(int(r["step"]), float(r["val_miou"])) for r in rows if r.get("val_miou")]
    if val:
        plot_curve(out / "val_miou.png", [v[0] for v in val], [v[1] for v in val], "mIoU (held-out fold, 1-shot)",
                   "validation mIoU")


def flush_log(path: Path, rows: list[dict[str, str]]) -> None:
    """Write every log row to ``log.csv`` (atomically: a crash leaves the previous file)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
