"""Fixtures shared by the segmentation CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.guided_net import GuidedNet, GuidedNetConfig, save_guided_net


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained tiny guided-net weights (hidden 8) in a temporary safetensors file."""
    path = tmp_path_factory.mktemp("w") / "seg.safetensors"
    save_guided_net(GuidedNet(GuidedNetConfig(hidden=8)), path)
    return path
