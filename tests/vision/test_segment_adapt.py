"""`microfarm segment --adapt`: the network is fine-tuned on the support before the first frame, the adapted
weights are saved and load again, and bad adaptation flags exit 2 with one line and write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from microfarm import main as microfarm_main
from models.guided_net import load_guided_net
from tests.conftest import write_support


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    for i in range(2):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((40, 50, 3), 60 * i, np.uint8))
    return folder


def test_adapt_steps_fine_tune_before_the_feed_and_save(tmp_path: Path, weights: Path, frames: Path, capsys) -> None:
    support = write_support(tmp_path)
    out, saved = tmp_path / "out", tmp_path / "adapted.safetensors"
    assert microfarm_main(["segment", "--support", support, "--source", str(frames), "--weights", str(weights),
                           "--imgsz", "32", "--crf", "none", "--adapt-steps", "3", "--save-adapted", str(saved),
                           "--out", str(out)]) == 0
    assert "adapted the head to the support in 3 steps" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adapted"]["steps"] == 3 and summary["adapted"]["saved"] == str(saved)
    adapted, extra = load_guided_net(saved)
    base, _ = load_guided_net(weights)
    assert extra["adapt"]["steps"] == 3 and extra["adapted_from"] == str(weights)
    assert not torch.equal(adapted.head[0].weight, base.head[0].weight)
    assert torch.equal(adapted.encoder.mid[0][0].weight, base.encoder.mid[0][0].weight)  # head only
    assert len(list((out / "masks").glob("*.png"))) == 2


@pytest.mark.parametrize("args, needle", [
    (["--adapt", "-1"], "--adapt must be"),
    (["--adapt", "two"], "--adapt"),
    (["--adapt-steps", "-3"], "--adapt-steps"),
    (["--adapt", "nan"], "--adapt must be"),
    (["--save-adapted", "x.safetensors"], "needs --adapt"),
    (["--adapt", "1", "--save-adapted", "x.pt"], ".safetensors"),
    (["--adapt-part", "all"], "choose one of"),
    (["--adapt", "1", "--backend", "onnx", "--bundle", "b"], "--backend torch"),
])
def test_bad_adaptation_flags_exit_2(tmp_path: Path, weights: Path, frames: Path, args, needle, capsys) -> None:
    support = write_support(tmp_path)
    out = tmp_path / "out"
    assert microfarm_main(["segment", "--support", support, "--source", str(frames), "--weights", str(weights),
                           "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()
