"""Guided network for few-shot segmentation (Rakelly et al. 2018, late fusion; multi-level fusion after
Zhang et al. 2020).

Input convention: images are float32 RGB in [0, 1], [N,3,H,W]; the network normalises them itself with the
ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225). Masks are float32 [K,1,H,W] in [0, 1]
(1 = the thing to segment).

- ``shot_guides(images [K,3,H,W], masks [K,1,H,W]) -> [K,G]``: one shared encoder gives mid- (stride 8) and
  high-level (stride 16) features; for each level the mask (positive) and its complement (negative) are
  resized to the feature map, normalised to sum 1 and used for masked average pooling. Per shot the guide is
  ``[pos_mid, neg_mid, pos_high, neg_high]``, G = 2 * (Cm + Ch).
- ``guide(images, masks) -> [1,G]``: the mean over shots. ``GuideAccumulator`` keeps a running sum and count
  so that more shots can be added without recomputing the old ones.
- ``segment(query [N,3,H,W], guide [1|N,G]) -> logits [N,2,H,W]`` (channel 1 = foreground): per level the
  guide vectors are tiled over the query features and concatenated with them and with two cosine-similarity
  maps (query vs. positive and vs. negative guide); a 1x1 conv per level, the high level upsampled to the
  mid level, concatenated, 1x1 convs to 2 logits, bilinear upsampling to the input size.
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
        cm, ch, hid = self.encoder.mid_channels, self.encoder.high_channels, self.config.hidden
        self.split = (cm, cm, ch, ch)
        self.guide_dim = 2 * (cm + ch)
        self.fuse_mid = _Fuse(cm, hid)
        self.fuse_high = _Fuse(ch, hid)
        self.head = nn.Sequential(nn.Conv2d(2 * hid, hid, 1), nn.ReLU(inplace=True), nn.Conv2d(hid, 2, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images [N,3,H,W] float in [0,1] -> (mid [N,Cm,H/8,W/8], high [N,Ch,H/16,W/16])."""
        return self.encoder((images - self.mean) / self.std)

    def shot_guides(self, images: Tensor, masks: Tensor) -> Tensor:
        """images [K,3,H,W] float [0,1], masks [K,1,H,W] float [0,1] -> per-shot guides [K,G]."""
        mid, high = self.features(images)
        pm, nm = _masked_pool(mid, masks)
        ph, nh = _masked_pool(high, masks)
        return torch.cat([pm, nm, ph, nh], 1)

    def guide(self, images: Tensor, masks: Tensor) -> Tensor:
        """images [K,3,H,W], masks [K,1,H,W] -> the support set's guide [1,G] (mean over the K shots)."""
        return self.shot_guides(images, masks).mean(0, keepdim=True)

    def head_logits(self, mid: Tensor, high: Tensor, guide: Tensor, size: tuple[int, int]) -> Tensor:
        pm, nm, ph, nh = torch.split(guide, self.split, dim=1)
        fm = self.fuse_mid(mid, pm, nm)
        fh = F.interpolate(self.fuse_high(high, ph, nh), size=fm.shape[-2:], mode="bilinear",
                           align_corners=False)
        logits = self.head(torch.cat([fm, fh], 1))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def segment(self, query: Tensor, guide: Tensor) -> Tensor:
        """query [N,3,H,W] float [0,1], guide [1,G] or [N,G] -> logits [N,2,H,W] (1 = foreground)."""
        mid, high = self.features(query)
        return self.head_logits(mid, high, guide, (query.shape[-2], query.shape[-1]))

    def forward(self, support: Tensor, masks: Tensor, query: Tensor) -> Tensor:
        """Training episodes: support [B,K,3,H,W], masks [B,K,1,H,W], query [B,3,H,W] -> logits [B,2,H,W].

        One encoder pass over all B*K support images and B queries (they must share H, W).
        """
        b, k = support.shape[:2]
        mid, high = self.features(torch.cat([support.flatten(0, 1), query], 0))
        m = masks.flatten(0, 1)
        pm, nm = _masked_pool(mid[: b * k], m)
        ph, nh = _masked_pool(high[: b * k], m)
        guides = torch.cat([pm, nm, ph, nh], 1).view(b, k, -1).mean(1)
        return self.head_logits(mid[b * k:], high[b * k:], guides, (query.shape[-2], query.shape[-1]))


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
