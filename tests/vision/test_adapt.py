"""Adaptation to the examples: the loss falls, the adapted copy segments the shown thing better, the original
model is untouched, and bad values are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microfarm import UsageError
from models.guided_net import GuidedNet, GuidedNetConfig
from vision.adapt import adapt
from vision.metrics import binary_iou


def _scene(rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Green-brown noise with a red disc (the thing) and a yellow disc (a distractor)."""
    img = np.clip(rng.normal((90, 120, 60), 20, (size, size, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    (cy, cx), (dy, dx) = rng.integers(20, size - 20, 2), rng.integers(20, size - 20, 2)
    red = (yy - cy) ** 2 + (xx - cx) ** 2 < 14 ** 2
    img[(yy - dy) ** 2 + (xx - dx) ** 2 < 12 ** 2] = (220, 210, 40)
    img[red] = (200, 40, 40)
    return img, red


def _iou(net: GuidedNet, shots, frames) -> float:
    with torch.no_grad():
        s = torch.from_numpy(np.stack([im for im, _ in shots])).permute(0, 3, 1, 2).float()[None] / 255
        m = torch.from_numpy(np.stack([mk for _, mk in shots])).float()[None, :, None]
        ious = []
        for im, mk in frames:
            q = torch.from_numpy(im).permute(2, 0, 1).float()[None] / 255
            ious.append(binary_iou(net(s, m, q).argmax(1)[0].numpy() == 1, mk))
    return float(np.mean(ious))


def test_adaptation_learns_the_examples_and_leaves_the_model_alone() -> None:
    from models.backbones import pretrained_weights

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = GuidedNet(GuidedNetConfig(backbone="efficientnet_lite0", hidden=16),
                    pretrained_weights("efficientnet_lite0")).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    shots = [_scene(rng) for _ in range(2)]
    frames = [_scene(rng) for _ in range(6)]
    iou0 = _iou(net, shots, frames)
    adapted, report = adapt(net, [([s[0] for s in shots], [s[1] for s in shots])], steps=40, size=64, lr=3e-3,
                            progress=False)
    assert report["steps"] == 40 and report["loss_last"] < report["loss_first"]
    iou1 = _iou(adapted, shots, frames)
    assert iou1 > iou0 + 0.2, (iou0, iou1)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_last_blocks_train_too_and_one_shot_works() -> None:
    rng = np.random.default_rng(1)
    net = GuidedNet(GuidedNetConfig(hidden=8)).eval()
    img, mask = _scene(rng)
    adapted, report = adapt(net, [([img], [mask])], steps=2, part="last", size=32, progress=False)
    assert report["part"] == "last"
    assert not torch.equal(adapted.encoder.high[0][0].weight, net.encoder.high[0][0].weight)
    assert torch.equal(adapted.encoder.mid[0][0].weight, net.encoder.mid[0][0].weight)


@pytest.mark.parametrize("kwargs", [{"seconds": 0, "steps": 0}, {"steps": 1, "part": "all"}])
def test_bad_adaptation_settings_are_usage_errors(kwargs) -> None:
    rng = np.random.default_rng(2)
    img, mask = _scene(rng)
    with pytest.raises(UsageError):
        adapt(GuidedNet(GuidedNetConfig(hidden=8)), [([img], [mask])], size=32, progress=False, **kwargs)
