"""Guided network for few-shot segmentation (Rakelly et al. 2018, late fusion; multi-level fusion after
Zhang et al. 2020).

Input convention: images are float32 RGB in [0, 1], [N,3,H,W]; the network normalises them itself with the
ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). Masks are float32 [K,1,H,W] in [0, 1]
(1 = the thing to segment).

- ``shot_guides(images [K,3,H,W], masks [K,1,H,W]) -> [K,G]``: one shared encoder gives mid- (stride 8) and
  high-level (stride 16) features, and for a three-level backbone (``efficientnet_lite0``) low-level ones
  (stride 4); for each level the mask (positive) and its complement (negative) are resized to the feature map,
  normalised to sum 1 and used for masked average pooling. Per shot the guide is ``[pos_mid, neg_mid, pos_high,
  neg_high(, pos_low, neg_low)]``, G = 2 * (sum of the levels' channels).
- ``guide(images, masks) -> [1,G]``: the mean over shots. ``GuideAccumulator`` keeps a running sum and count
  so that more shots can be added without recomputing the old ones.
- ``segment(query [N,3,H,W], guide [1|N,G]) -> logits [N,2,H,W]`` (channel 1 = foreground): per level the
  guide vectors are tiled over the query features and concatenated with them and with two cosine-similarity
  maps (query vs. positive and vs. negative guide); a 1x1 conv per level, every level upsampled to the finest
  one (mid, or low where there is one), concatenated, 1x1 convs to 2 logits, bilinear upsampling to the input
  size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.backbones import build_backbone
from models.weights import WeightsMismatchError, load_into, read_metadata, save_weights

__all__ = ["GuidedNetConfig", "GuidedNet", "GuideAccumulator", "save_guided_net", "load_guided_net",
           "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KIND = "guided_net"


@dataclass
class GuidedNetConfig:
    """Architecture of a ``GuidedNet`` (saved with its weights)."""

    backbone: str = "compact"
    hidden: int = 64


def _masked_pool(feat: Tensor, mask: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """feat [K,C,h,w], mask [K,1,H,W] in [0,1] -> positive and negative pooled vectors, each [K,C]."""
    m = F.interpolate(mask, size=feat.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    pos = m / (m.sum((2, 3), keepdim=True) + eps)
    neg = (1 - m) / ((1 - m).sum((2, 3), keepdim=True) + eps)
    return (feat * pos).sum((2, 3)), (feat * neg).sum((2, 3))


class _Fuse(nn.Module):
    """Query features [N,C,h,w] + guide vectors [N,C] x2 -> [N,hidden,h,w]."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3 * channels + 2, hidden, 1), nn.ReLU(inplace=True))

    def forward(self, q: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
        n, _, h, w = q.shape
        pos = pos.expand(n, -1)[:, :, None, None]
        neg = neg.expand(n, -1)[:, :, None, None]
        cos_p = F.cosine_similarity(q, pos, dim=1, eps=1e-6).unsqueeze(1)
        cos_n = F.cosine_similarity(q, neg, dim=1, eps=1e-6).unsqueeze(1)
        x = torch.cat([q, pos.expand(-1, -1, h, w), neg.expand(-1, -1, h, w), cos_p, cos_n], 1)
        return self.conv(x)


class GuidedNet(nn.Module):
    """Few-shot guided segmentation network; see the module docstring for shapes."""

    def __init__(self, config: GuidedNetConfig | None = None,
                 backbone_weights: str | Path | None = None) -> None:
        super().__init__()
        self.config = config or GuidedNetConfig()
        self.encoder = build_backbone(self.config.backbone, backbone_weights)
        channels: tuple[int, ...] = tuple(self.encoder.channels)
        hid = self.config.hidden
        self.split = tuple(c for c in channels for _ in range(2))
        self.guide_dim = 2 * sum(channels)
        self.fuse_mid = _Fuse(channels[0], hid)
        self.fuse_high = _Fuse(channels[1], hid)
        if len(channels) > 2:
            self.fuse_low = _Fuse(channels[2], hid)
        self.head = nn.Sequential(nn.Conv2d(len(channels) * hid, hid, 1), nn.ReLU(inplace=True), nn.Conv2d(hid, 2, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: Tensor) -> tuple[Tensor, ...]:
        """images [N,3,H,W] float in [0,1] -> (mid [N,Cm,H/8,W/8], high [N,Ch,H/16,W/16](, low [N,Cl,H/4,W/4]))."""
        return self.encoder((images - self.mean) / self.std)

    def _pool(self, feats: tuple[Tensor, ...], masks: Tensor) -> Tensor:
        """Per-level positive and negative masked averages, concatenated: the per-shot guides [K,G]."""
        return torch.cat([v for f in feats for v in _masked_pool(f, masks)], 1)

    def shot_guides(self, images: Tensor, masks: Tensor) -> Tensor:
        """images [K,3,H,W] float [0,1], masks [K,1,H,W] float [0,1] -> per-shot guides [K,G]."""
        return self._pool(self.features(images), masks)

    def guide(self, images: Tensor, masks: Tensor) -> Tensor:
        """images [K,3,H,W], masks [K,1,H,W] -> the support set's guide [1,G] (mean over the K shots)."""
        return self.shot_guides(images, masks).mean(0, keepdim=True)

    def head_logits(self, feats: tuple[Tensor, ...], guide: Tensor, size: tuple[int, int]) -> Tensor:
        """Query features (``features``' tuple), guide [1|N,G] -> logits [N,2,*size]."""
        parts = torch.split(guide, self.split, dim=1)
        fuses = [self.fuse_mid, self.fuse_high] + ([self.fuse_low] if len(feats) > 2 else [])
        fused = [fuse(f, parts[2 * i], parts[2 * i + 1]) for i, (fuse, f) in enumerate(zip(fuses, feats, strict=True))]
        finest = fused[-1].shape[-2:] if len(fused) > 2 else fused[0].shape[-2:]
        fused = [x if x.shape[-2:] == finest else F.interpolate(x, size=finest, mode="bilinear", align_corners=False)
                 for x in fused]
        logits = self.head(torch.cat(fused, 1))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def segment(self, query: Tensor, guide: Tensor) -> Tensor:
        """query [N,3,H,W] float [0,1], guide [1,G] or [N,G] -> logits [N,2,H,W] (1 = foreground)."""
        return self.head_logits(self.features(query), guide, (query.shape[-2], query.shape[-1]))

    def forward(self, support: Tensor, masks: Tensor, query: Tensor) -> Tensor:
        """Training episodes: support [B,K,3,H,W], masks [B,K,1,H,W], query [B,3,H,W] -> logits [B,2,H,W].

        One encoder pass over all B*K support images and B queries (they must share H, W).
        """
        b, k = support.shape[:2]
        feats = self.features(torch.cat([support.flatten(0, 1), query], 0))
        guides = self._pool(tuple(f[: b * k] for f in feats), masks.flatten(0, 1)).view(b, k, -1).mean(1)
        return self.head_logits(tuple(f[b * k:] for f in feats), guides, (query.shape[-2], query.shape[-1]))


class GuideAccumulator:
    """Running sum and count of per-shot guides: ``add(shot_guides [K,G])``, ``value() -> [1,G]``."""

    def __init__(self) -> None:
        self.sum: Tensor | None = None
        self.count = 0

    def add(self, shot_guides: Tensor) -> None:
        s = shot_guides.detach().sum(0, keepdim=True)
        self.sum = s if self.sum is None else self.sum + s
        self.count += int(shot_guides.shape[0])

    def value(self) -> Tensor:
        if self.sum is None or self.count == 0:
            raise RuntimeError("no support shots yet: call set_support/add_support first")
        return self.sum / self.count


def save_guided_net(model: GuidedNet, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Weights as safetensors (atomic, ``models.weights``), the config and ``extra`` in its metadata."""
    return save_weights(path, model, asdict(model.config), kind=KIND, extra=extra)


def load_guided_net(path: str | Path, device: str | torch.device = "cpu") -> tuple[GuidedNet, dict[str, Any]]:
    """A ``GuidedNet`` (eval mode) and the ``extra`` dict saved with it, from a ``save_guided_net`` file.

    Raises ``models.weights.WeightsError`` (not found, not a guided-net file, tensors that do not fit).
    """
    meta = read_metadata(path)
    if meta["kind"] != KIND:
        raise WeightsMismatchError(f"{str(path)!r} holds {meta['kind']!r} weights, expected {KIND!r}")
    model = GuidedNet(GuidedNetConfig(**meta["config"]))
    load_into(model, path, kind=KIND)
    return model.to(device).eval(), meta["extra"]
