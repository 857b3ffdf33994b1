"""models.fold_bn: the folded, channels-last inference copy equals the eager network, for every backbone, and
TorchBackend remakes it when the weights change."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from models.efficientnet_lite import SamePadConv, SymmetricPadConv
from models.fold_bn import fold_batchnorm, inference_copy
from models.guided_net import GuidedNet, GuidedNetConfig
from vision.torch_backend import TorchBackend


def _net(backbone: str) -> GuidedNet:
    torch.manual_seed(0)
    net = GuidedNet(GuidedNetConfig(backbone=backbone, hidden=16))
    for m in net.modules():  # statistics away from the identity, so that a wrong fold shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("backbone", ["compact", "efficientnet_lite0", "mobilenet_v3_small"])
def test_inference_copy_matches_eager_and_folds_every_bn(backbone):
    net = _net(backbone)
    fast = inference_copy(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.encoder.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.encoder.modules())  # the original is untouched
    g = torch.Generator().manual_seed(1)
    q, img = torch.rand(1, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    mask = (torch.rand(2, 1, 64, 64, generator=g) > 0.6).float()
    with torch.inference_mode():
        guide = net.guide(img, mask)
        fast_guide = fast.guide(img.contiguous(memory_format=torch.channels_last), mask)
        torch.testing.assert_close(fast_guide, guide, rtol=1e-4, atol=1e-4)
        want = net.segment(q, guide)
        got = fast.segment(q.contiguous(memory_format=torch.channels_last), guide)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("side", [64, 50, 37])
def test_symmetric_padding_equals_same_padding_at_any_side(side):
    """The inference copy's EfficientNet convolutions pad inside the convolution (no F.pad) and crop: the same
    feature maps as the eager "SAME" convolutions at even and odd input sides."""
    net = _net("efficientnet_lite0")
    fast = inference_copy(net)
    assert any(isinstance(m, SamePadConv) for m in net.encoder.modules())
    assert not any(isinstance(m, SamePadConv) for m in fast.encoder.modules())
    assert any(isinstance(m, SymmetricPadConv) and m.crop for m in fast.encoder.modules())  # the stride-2 ones
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(side))
    with torch.inference_mode():
        want, got = net.features(x), fast.features(x.contiguous(memory_format=torch.channels_last))
    assert [w.shape for w in want] == [g.shape for g in got]
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_refuses_training_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(_net("compact").encoder.train())


def test_backend_matches_eager_and_follows_weight_changes():
    net = _net("efficientnet_lite0")
    fast, eager = TorchBackend(net), TorchBackend(net, fast=False)
    rng = np.random.default_rng(0)
    img = rng.random((1, 3, 64, 64), dtype=np.float32)
    mask = (rng.random((1, 1, 64, 64)) > 0.6).astype(np.float32)
    guide = eager.guide(img, mask)
    np.testing.assert_allclose(fast.guide(img, mask), guide, rtol=1e-4, atol=1e-4)
    before = fast.segment(img, guide)
    assert before.flags["C_CONTIGUOUS"] and before.shape == (1, 2, 64, 64)
    np.testing.assert_allclose(before, eager.segment(img, guide), atol=1e-5)
    with torch.no_grad():  # an in-place change, as an optimiser step makes: the copy must be made again
        net.head[2].bias[1] += 3.0
    after = fast.segment(img, guide)
    assert after[0, 1].mean() > before[0, 1].mean() + 0.1
    np.testing.assert_allclose(after, eager.segment(img, guide), atol=1e-5)
    other = _net("efficientnet_lite0")
    with torch.no_grad():
        other.head[2].bias[1] -= 3.0
    fast.model = other  # a new model: a new copy
    np.testing.assert_allclose(fast.segment(img, guide), TorchBackend(other, fast=False).segment(img, guide),
                               atol=1e-5)
