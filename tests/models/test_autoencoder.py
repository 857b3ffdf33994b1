"""Autoencoder shapes, preprocessing (OpenCV-exact gray) and safetensors weights with config metadata."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.autoencoder import AutoencoderConfig, ConvAutoencoder, preprocess, rgb_to_gray
from models.mlp import forward_model, inverse_model
from models.weights import WeightsMismatchError, WeightsNotFoundError, load_into, load_weights, save_weights

TINY = AutoencoderConfig(size=16, color="gray", channels=(4, 4), code_size=8)


@pytest.mark.parametrize("color,cin", [("gray", 1), ("rgb", 3)])
def test_shapes(color: str, cin: int) -> None:
    ae = ConvAutoencoder(AutoencoderConfig(size=16, color=color, channels=(4, 6, 8), code_size=5))
    x = torch.rand(3, cin, 16, 16)
    with torch.no_grad():
        assert ae.encode(x).shape == (3, 5)
        y = ae(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1


def test_paper_preset() -> None:
    cfg = AutoencoderConfig()
    assert (cfg.size, cfg.color, cfg.channels, cfg.code_size) == (64, "gray", (256, 128, 128), 32)
    convs = [m for m in ConvAutoencoder(cfg).encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [256, 128, 128]


def test_preprocess_matches_opencv() -> None:
    img = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3)).astype(np.uint8)
    assert np.array_equal(rgb_to_gray(img[0]), cv2.cvtColor(img[0], cv2.COLOR_RGB2GRAY))
    x = preprocess(img, "gray", 16)
    ref = cv2.cvtColor(cv2.resize(img[1], (16, 16), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY) / 255.0
    assert x.shape == (3, 1, 16, 16) and x.dtype == torch.float32
    assert np.allclose(x[1, 0].numpy(), ref, atol=1e-7)
    assert preprocess(img[0], "rgb", 40).shape == (1, 3, 40, 40)
    with pytest.raises(ValueError, match="uint8"):
        preprocess(img.astype(np.float32), "gray", 16)


def test_weights_round_trip_and_errors(tmp_path: Path) -> None:
    ae = ConvAutoencoder(TINY)
    p = save_weights(tmp_path / "ae.safetensors", ae, TINY.to_dict(), kind="autoencoder")
    state, cfg = load_weights(p, kind="autoencoder", expected_config=TINY.to_dict())
    assert AutoencoderConfig.from_dict(cfg) == TINY
    other = ConvAutoencoder(TINY)
    load_into(other, p, kind="autoencoder")
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(other.encode(x), ae.encode(x))
    with pytest.raises(WeightsMismatchError, match="code_size"):
        load_weights(p, expected_config={**TINY.to_dict(), "code_size": 9})
    with pytest.raises(WeightsMismatchError, match="expected 'forward_mlp'"):
        load_weights(p, kind="forward_mlp")
    with pytest.raises(WeightsMismatchError, match="does not fit"):
        load_into(ConvAutoencoder(AutoencoderConfig(size=16, channels=(4, 4), code_size=9)), p)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_weights(tmp_path / "missing.safetensors")


def test_mlp_preset() -> None:
    f, i = forward_model(), inverse_model()
    assert [lin.out_features for lin in f.layers] == [320, 320, 32]
    assert f(torch.rand(4, 2)).shape == (4, 32) and i(torch.rand(4, 32)).shape == (4, 2)
    assert all(float(lin.bias.abs().sum()) == 0 for lin in f.layers)
