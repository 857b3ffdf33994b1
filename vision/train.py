"""`microfarm train-segmenter`: episodic few-shot training of the guided network on a rendered dataset.

PASCAL-5i protocol: the species of three folds are the training classes, the fourth (``--fold``) is held
out; every step draws ``--batch`` episodes of one shot count K (uniform in 1..``--shots``), each with K
support frames and one query frame of one training class. Every image is strongly augmented
(``strong_augment``: its own geometry, camera degradations and a small colour jitter, and one colour transform
shared by the whole episode, ``--colour episode``; or a colour transform per image, ``--colour frame``).
Loss: cross-entropy + soft Dice on the foreground. AdamW with warm-up and cosine decay.

Writes into ``runs/train-segmenter/<N>/`` (or ``--out``): ``config.json``, ``log.csv`` (step, loss, lr,
validation mIoU / FB-IoU / loss, seconds, the EDM penalty with ``--edm-weight``, and every ``--veca-every`` steps
the VECA columns of ``vision.train_data.veca_row``), ``loss.png``, ``val_miou.png``, ``checkpoint/``
(``model.safetensors``,
``optimizer.pt`` (a plain state dict, loads with ``torch.load(weights_only=True)``), ``state.json``; each
written atomically, ``state.json`` last), ``weights.safetensors`` (the final model, for ``microfarm segment
--weights``) and ``summary.json``. ``--init WEIGHTS`` starts a new run from a saved model (fine-tuning).
``--resume DIR`` continues a run from its checkpoint with the run's own
config (flags given on the command line override it, e.g. a larger ``--steps``).

Data-parallel: under ``torchrun --nproc-per-node G -m microfarm train-segmenter ...`` (``WORLD_SIZE`` > 1)
each process trains on its own episodes (``--batch`` per process), gradients are all-reduced by
``DistributedDataParallel`` (NCCL on CUDA, gloo on CPU), and rank 0 validates, logs and checkpoints.

A non-finite loss stops training with exit code 1 and a message; the last good checkpoint is kept.
The steps: the flags and their checks in ``vision.train_config``, the set-up (devices, episodes, model,
optimiser, resume) in ``vision.train_setup``, the episode pipeline, the loss and the log in ``vision.train_data``;
the loop, validation and checkpoints here.
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
from typing import Any

import numpy as np
import torch

from microfarm_toolkit import UsageError, atomic_path, atomic_write_json, given_fields, next_run_dir, parse_config
from vision import train_setup as setup
from vision.augment import strong_augment
from vision.episodes import EpisodeSampler
from vision.train_config import TrainConfig
from vision.train_data import StepBatches, edm_loss, flush_log, read_log, seg_loss, veca_batch, veca_row, write_plots

__all__ = ["TrainConfig", "strong_augment", "train", "cli", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped (the last good checkpoint is kept)."""


# -- training ---------------------------------------------------------------------------------------------
@torch.no_grad()
def validate(model: torch.nn.Module, sampler: EpisodeSampler, episodes: int, device: torch.device,
             dice: float = 0.5) -> dict[str, float]:
    """1-shot (or the sampler's K) episodes at the sampler's size -> ``{"miou", "fb_iou", "loss"}`` (loss: the mean
    of ``seg_loss`` with weight ``dice`` over the episodes)."""
    from vision.metrics import SegmentationMetrics

    was = model.training
    model.eval()
    met = SegmentationMetrics()
    total = 0.0
    for i in range(episodes):
        ep = sampler.episode(i)
        s = torch.from_numpy(np.stack(ep.support_images)).permute(0, 3, 1, 2).float().div(255)[None]
        m = torch.from_numpy(np.stack(ep.support_masks)).float()[None, :, None]
        q = torch.from_numpy(ep.query_image).permute(2, 0, 1).float().div(255)[None]
        logits = model(s.to(device), m.to(device), q.to(device))
        met.update(logits.argmax(1)[0].cpu().numpy() == 1, ep.query_mask, ep.class_id)
        total += float(seg_loss(logits, torch.from_numpy(ep.query_mask).long()[None].to(device), dice))
    model.train(was)
    return {"miou": met.miou(), "fb_iou": met.fb_iou(), "loss": total / max(1, episodes)}


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
    procs = setup.processes(cfg)
    train_folds, data, val_sampler = setup.episodes(cfg, procs.world)
    model, opt, start_weights, pretrained = setup.model_and_optimizer(cfg)
    start = setup.restore(cfg, out, model, opt)
    net, frozen_bn = setup.place(model, opt, procs, cfg, pretrained)
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=StepBatches(start, cfg.steps, cfg.batch, procs.rank, procs.world),
        num_workers=cfg.workers, persistent_workers=False, pin_memory=procs.use_cuda)
    run = _Run(cfg, out, procs, model, net, opt, val_sampler, frozen_bn, start,
               extra=setup.run_extra(cfg, train_folds, start_weights))
    if cfg.edm_weight > 0:  # the taps keep the graph: the penalty trains the layers
        from models.veca import LayerTaps, guided_net_layers

        run.taps = LayerTaps(guided_net_layers(model), detach=False)
    if cfg.veca_every and procs.main:
        run.veca_data = veca_batch(data.dataset, train_folds, cfg)
    _steps(run, loader)
    return _finish(run) if procs.main else {}


@dataclasses.dataclass
class _Run:
    """A training run in progress: what the steps use and what they leave for the summary."""

    cfg: TrainConfig
    out: Path
    procs: setup.Processes
    model: Any
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    val_sampler: EpisodeSampler
    frozen_bn: bool
    start: int
    extra: dict[str, Any]
    rows: list[dict[str, str]] = dataclasses.field(default_factory=list)
    t0: float = 0.0
    last_val: dict[str, float] = dataclasses.field(default_factory=dict)
    last_good: int | None = None
    taps: Any = None  # models.veca.LayerTaps of the EDM penalty (--edm-weight > 0)
    veca_data: Any = None  # VECA's fixed batch (train_data.veca_batch)
    last_edm: float | None = None

    def __post_init__(self) -> None:  # the log so far (up to the step resumed from) and its clock
        self.rows = [r for r in read_log(self.log_path) if int(r["step"]) <= self.start] if self.procs.main else []
        self.t0 = time.perf_counter() - (float(self.rows[-1]["seconds"]) if self.rows else 0.0)
        self.last_good = self.start if self.cfg.resume is not None else None

    @property
    def ckpt(self) -> Path:
        return self.out / "checkpoint"

    @property
    def log_path(self) -> Path:
        return self.out / "log.csv"


def _steps(run: _Run, loader: Any) -> None:
    """The training steps from ``run.start``: schedule, optimiser step, validation, log and checkpoints; the log and
    plots are written however the loop ends."""
    cfg = run.cfg
    bar = None
    if run.procs.main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=run.start, desc="train-segmenter", unit="step", dynamic_ncols=True)
    try:
        for step, batch in enumerate(loader, run.start):
            frac = _schedule(run, step)
            loss, shots = _optimise(run, step, batch)
            done = step + 1
            out_of_time = cfg.time_budget > 0 and frac >= 1.0
            if run.procs.main:
                _record(run, done, loss, shots, done == cfg.steps or out_of_time, bar)
            if out_of_time:
                break
    finally:
        if bar is not None:
            bar.close()
        if run.procs.main and run.rows:
            flush_log(run.log_path, run.rows)
            write_plots(run.out, run.rows)
        if run.procs.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def _schedule(run: _Run, step: int) -> float:
    """Set the learning rates of ``step``; returns the run's progress (every rank follows rank 0's clock)."""
    frac = _progress(step, time.perf_counter() - run.t0, run.cfg)
    if run.procs.distributed and run.cfg.time_budget > 0:
        import torch.distributed as dist

        ft = torch.tensor([frac], device=run.procs.device)
        dist.broadcast(ft, 0)
        frac = float(ft.item())
    for g in run.opt.param_groups:
        g["lr"] = _lr_at(step, run.cfg, frac) * g.get("lr_mult", 1.0)
    return frac


def _optimise(run: _Run, step: int, batch: Any) -> tuple[torch.Tensor, int]:
    """One optimiser step on a batch of episodes; returns the loss and the batch's shot count.
    ``NonFiniteLossError`` before the step if the loss is not finite."""
    device, cfg = run.procs.device, run.cfg
    s, sm, q, qm = batch
    s = s.to(device, non_blocking=True).float().div_(255)
    sm = sm.to(device, non_blocking=True).float()
    q = q.to(device, non_blocking=True).float().div_(255)
    qm = qm.to(device, non_blocking=True).long()
    if run.taps is not None:
        run.taps.clear()
    logits = run.net(s, sm, q)
    seg = loss = seg_loss(logits, qm, cfg.dice)
    if run.taps is not None:
        pen = edm_loss(run.taps.outputs, cfg.edm_groups)
        run.taps.clear()
        run.last_edm = float(pen.detach())
        loss = seg + cfg.edm_weight * pen
    if not torch.isfinite(loss):
        where = (f"the last good checkpoint (step {run.last_good}) is kept in {str(run.ckpt)!r}"
                 if run.last_good is not None else "no checkpoint had been written yet")
        raise NonFiniteLossError(f"loss became {loss.item()} at step {step}; stopped, {where}; "
                                 f"lower --lr (now {cfg.lr}) or resume with --resume {run.out}")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 5.0)
    run.opt.step()
    return seg.detach(), int(s.shape[1])


def _record(run: _Run, done: int, loss: torch.Tensor, shots: int, final: bool, bar: Any) -> None:
    """Rank 0 after step ``done``: validation when due, the log row, the progress bar, checkpoint and plots."""
    cfg = run.cfg
    val = {}
    if (cfg.val_every and done % cfg.val_every == 0) or final:
        val = validate(run.model, run.val_sampler, cfg.val_episodes, run.procs.device, cfg.dice)
        if run.frozen_bn:
            setup.freeze_bn(run.model.encoder)
        run.last_val = val
    vecas = {}
    if run.veca_data is not None and (done % cfg.veca_every == 0 or final):
        vecas = veca_row(run.model, run.veca_data, run.procs.device)
        if run.frozen_bn:
            setup.freeze_bn(run.model.encoder)
    run.rows.append({"step": str(done), "loss": f"{loss.item():.5f}", "lr": f"{run.opt.param_groups[0]['lr']:.6g}",
                     "shots": str(shots), "val_miou": f"{val['miou']:.4f}" if val else "",
                     "val_fb_iou": f"{val['fb_iou']:.4f}" if val else "",
                     "seconds": f"{time.perf_counter() - run.t0:.1f}", "val_loss": f"{val['loss']:.5f}" if val else "",
                     "edm": "" if run.last_edm is None else f"{run.last_edm:.5f}", **vecas})
    if bar is not None:
        post = {"loss": f"{loss.item():.3f}"}
        if run.last_val:
            post["val_mIoU"] = f"{run.last_val['miou']:.3f}"
        bar.set_postfix(post, refresh=False)
        bar.update(1)
    if done % cfg.save_every == 0 or final:
        flush_log(run.log_path, run.rows)
        _save_checkpoint(run.ckpt, run.model, run.opt, done, cfg, run.extra)
        run.last_good = done
        if val or final:
            write_plots(run.out, run.rows)


def _finish(run: _Run) -> dict[str, Any]:
    """Rank 0 at the end: ``weights.safetensors`` and ``summary.json``; returns the summary."""
    from models.guided_net import save_guided_net

    rows, last_val = run.rows, run.last_val
    secs = float(rows[-1]["seconds"]) if rows else 0.0
    summary = {"steps": int(rows[-1]["step"]) if rows else run.start, "seconds": secs,
               "final_loss": float(rows[-1]["loss"]) if rows else None,
               "val_miou": last_val.get("miou"), "val_fb_iou": last_val.get("fb_iou"),
               "world_size": run.procs.world, "device": str(run.procs.device), "config": _cfg_json(run.cfg)}
    save_guided_net(run.model, run.out / "weights.safetensors",
                    extra={**run.extra, "steps": summary["steps"], "val_miou": last_val.get("miou")})
    atomic_write_json(run.out / "summary.json", summary)
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
