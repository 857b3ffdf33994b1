"""The convolutional autoencoder of Schillaci et al. 2020 (offline feature learning) and its preprocessing.

Paper preset (``AutoencoderConfig()``): 64x64 grayscale in, encoder Conv3x3(256)-ReLU-MaxPool2 -
Conv3x3(128)-ReLU-MaxPool2 - Conv3x3(128)-ReLU-MaxPool2 - Flatten - Dense(32) (the code, linear); the
decoder mirrors it: Dense(128*8*8)-ReLU - [Upsample2 - Conv3x3-ReLU] x3 (128, 128, 256) - Conv3x3(1) - sigmoid.
``channels``, ``code_size``, ``size`` and ``color`` are configurable so tiny configs exist for tests.

Preprocessing (reproducible without our code, e.g. before an ONNX encoder):
1. RGB uint8 image (H, W, 3); if H, W != size: ``cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)``;
2. color "gray": ``cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)`` (uint8, = round(0.299 R + 0.587 G + 0.114 B)
   in OpenCV's 15-bit fixed point); color "rgb": keep the 3 channels;
3. float32, times ``scale`` = 1/255 (mean 0, std 1: no further normalisation);
4. layout NCHW: (N, 1, size, size) for gray, (N, 3, size, size) for rgb.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

__all__ = ["AutoencoderConfig", "ConvAutoencoder", "preprocess", "rgb_to_gray", "PREPROCESS_SCALE"]

PREPROCESS_SCALE = 1.0 / 255.0


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """size: input side in pixels (divisible by 2**len(channels)); color: "gray" (1 channel) or "rgb" (3);
    channels: conv widths of the encoder, outermost first; code_size: length of the code vector."""

    size: int = 64
    color: Literal["gray", "rgb"] = "gray"
    channels: tuple[int, ...] = (256, 128, 128)
    code_size: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.color not in ("gray", "rgb"):
            raise ValueError(f"color must be 'gray' or 'rgb', got {self.color!r}")
        if not self.channels or self.size % (2 ** len(self.channels)):
            raise ValueError(f"size {self.size} must be divisible by 2**{len(self.channels)} (one pool per conv)")

    @property
    def in_channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "color": self.color, "channels": list(self.channels), "code_size": self.code_size}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AutoencoderConfig:
        return cls(size=int(d["size"]), color=d["color"], channels=tuple(d["channels"]),
                   code_size=int(d["code_size"]))


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


class Encoder(nn.Module):
    """(N, in_channels, size, size) float32 in [0, 1] -> (N, code_size) float32."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = cfg.in_channels
        for c in cfg.channels:
            layers += [_conv(cin, c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = c
        side = cfg.size // 2 ** len(cfg.channels)
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * side * side, cfg.code_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(image), 1))


class Decoder(nn.Module):
    """(N, code_size) float32 -> (N, in_channels, size, size) float32 in [0, 1]."""

    def __init__(self, cfg: AutoencoderConfig) -> None:
        super().__init__()
        self.side = cfg.size // 2 ** len(cfg.channels)
        self.c0 = cfg.channels[-1]
        self.fc = nn.Linear(cfg.code_size, self.c0 * self.side * self.side)
        layers: list[nn.Module] = []
        cin = self.c0
        for c in reversed(cfg.channels):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(cin, c), nn.ReLU(inplace=True)]
            cin = c
        layers += [_conv(cin, cfg.in_channels), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc(code)).view(-1, self.c0, self.side, self.side)
        return self.net(x)


class ConvAutoencoder(nn.Module):
    """``encode``: (N, C_in, S, S) in [0, 1] -> (N, code); ``decode``: (N, code) -> (N, C_in, S, S);
    ``forward``: reconstruction. Train with MSE against the input (Adam, as in the paper)."""

    def __init__(self, cfg: AutoencoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or AutoencoderConfig()
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """RGB uint8 (N, H, W, 3) or (H, W, 3) -> codes (N, code_size) float32 (eval mode, no grad)."""
        x = preprocess(images, self.cfg.color, self.cfg.size)
        self.eval()
        out = [self.encoder(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.cfg.code_size), np.float32)


def rgb_to_gray(images: np.ndarray) -> np.ndarray:
    """OpenCV's ``COLOR_RGB2GRAY`` on uint8 (..., 3) -> uint8 (...), bit-exact, vectorised (15-bit fixed point)."""
    rgb = images.astype(np.int32)
    y = rgb[..., 0] * 9798 + rgb[..., 1] * 19235 + rgb[..., 2] * 3735 + (1 << 14)
    return (y >> 15).astype(np.uint8)


def preprocess(images: np.ndarray, color: str = "gray", size: int = 64) -> torch.Tensor:
    """RGB uint8 (N, H, W, 3) or (H, W, 3) -> float32 tensor (N, 1|3, size, size) in [0, 1] (see module doc)."""
    a = np.asarray(images)
    if a.dtype != np.uint8 or a.shape[-1] != 3:
        raise ValueError(f"expected RGB uint8 images (..., H, W, 3), got {a.dtype} {a.shape}")
    if a.ndim == 3:
        a = a[None]
    if a.shape[1:3] != (size, size):
        import cv2

        a = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in a])
    if color == "gray":
        x = rgb_to_gray(a)[:, None].astype(np.float32)
    else:
        x = a.transpose(0, 3, 1, 2).astype(np.float32)
    return torch.from_numpy(x * np.float32(PREPROCESS_SCALE))
