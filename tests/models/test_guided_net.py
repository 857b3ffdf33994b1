"""The guided network: shapes, guide accumulation, backbone registry, local backbone weights, save/load."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from microfarm import UsageError
from models.backbones import BACKBONES, build_backbone
from models.guided_net import GuideAccumulator, GuidedNet, GuidedNetConfig, load_guided_net, save_guided_net


def _support(k: int = 4, size: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(k, 3, size, size, generator=g)
    masks = (torch.rand(k, 1, size // 8, size // 8, generator=g) > 0.5).float()
    return images, torch.nn.functional.interpolate(masks, size=(size, size))


def test_shapes():
    net = GuidedNet().eval()
    images, masks = _support()
    with torch.no_grad():
        g = net.guide(images, masks)
        assert g.shape == (1, net.guide_dim)
        assert net.segment(torch.rand(3, 3, 64, 96), g).shape == (3, 2, 64, 96)
        assert net.segment(torch.rand(1, 3, 50, 70), g).shape == (1, 2, 50, 70)  # not a multiple of 16
        out = net(images.view(2, 2, 3, 64, 64), masks.view(2, 2, 1, 64, 64), torch.rand(2, 3, 64, 64))
        assert out.shape == (2, 2, 64, 64)


def test_guide_same_at_once_or_shot_by_shot():
    net = GuidedNet().eval()
    images, masks = _support(k=5)
    with torch.no_grad():
        at_once = net.guide(images, masks)
        acc = GuideAccumulator()
        acc.add(net.shot_guides(images[:2], masks[:2]))
        for i in range(2, 5):
            acc.add(net.shot_guides(images[i: i + 1], masks[i: i + 1]))
        assert acc.count == 5
        torch.testing.assert_close(acc.value(), at_once, atol=1e-5, rtol=1e-4)
        # the forward (training) path gives the same guide, hence the same logits
        q = torch.rand(1, 3, 64, 64)
        torch.testing.assert_close(net(images[None], masks[None], q), net.segment(q, at_once),
                                   atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError, match="support"):
        GuideAccumulator().value()


def test_positive_and_negative_pooling():
    net = GuidedNet().eval()
    images, _ = _support(k=1)
    full, empty = torch.ones(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    with torch.no_grad():
        mid, high = net.features(images)
        g_full, g_empty = net.shot_guides(images, full), net.shot_guides(images, empty)
    cm = net.encoder.mid_channels
    torch.testing.assert_close(g_full[0, :cm], mid.mean((0, 2, 3)), atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(g_empty[0, cm: 2 * cm], mid.mean((0, 2, 3)), atol=1e-4, rtol=1e-3)
    assert torch.all(g_full[0, cm: 2 * cm] == 0) and torch.all(g_empty[0, :cm] == 0)


def test_backbone_registry_fails_loudly():
    assert {"compact", "vgg16", "resnet18"} <= set(BACKBONES)
    with pytest.raises(UsageError, match="available: compact.*vgg16"):
        build_backbone("resnet9000")
    with pytest.raises(UsageError, match="does not exist"):
        build_backbone("compact", "/nonexistent/weights.safetensors")


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "mobilenet_v3_small"])
def test_torchvision_backbones_build_without_download(name):
    bb = build_backbone(name).eval()
    with torch.no_grad():
        mid, high = bb(torch.rand(1, 3, 64, 64))
    assert mid.shape == (1, bb.mid_channels, 8, 8) and high.shape == (1, bb.high_channels, 4, 4)


def test_local_backbone_weights_load(tmp_path):
    from torchvision.models import resnet18

    ref = resnet18(weights=None)
    torch.nn.init.constant_(ref.layer3[0].conv1.weight, 0.125)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    bb = build_backbone("resnet18", tmp_path / "r18.pth")
    assert torch.all(bb.high[0].conv1.weight == 0.125)

    src = build_backbone("compact")
    torch.nn.init.constant_(src.high[0][0].weight, 0.25)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "c.safetensors"))
    net = GuidedNet(GuidedNetConfig(backbone="compact"), backbone_weights=tmp_path / "c.safetensors")
    assert torch.all(net.encoder.high[0][0].weight == 0.25)

    save_file({"nope": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(UsageError, match="does not fit"):
        build_backbone("compact", tmp_path / "bad.safetensors")


def test_save_and_load_roundtrip(tmp_path):
    net = GuidedNet(GuidedNetConfig(backbone="mobilenet_v3_small", hidden=32)).eval()
    path = save_guided_net(net, tmp_path / "net.safetensors", extra={"imgsz": 128})
    loaded, extra = load_guided_net(path)
    assert extra == {"imgsz": 128} and loaded.config == net.config
    images, masks = _support(k=2)
    with torch.no_grad():
        g = net.guide(images, masks)
        torch.testing.assert_close(loaded.segment(images, g), net.segment(images, g))
