"""`microfarm train-segmenter` with VECA logging and the EDM penalty: the log's columns, the flags and their checks,
and the guided net's taps."""

from __future__ import annotations

import csv

import pytest
import torch
from test_episodes import make_dataset

import microfarm
import vision.train as vt
from models.backbones import build_backbone
from models.guided_net import GuidedNet, GuidedNetConfig, load_guided_net
from models.veca import LayerTaps, guided_net_layers, layer_channels
from vision.train_config import BACKBONE_CHANNELS
from vision.train_data import VECA_FIELDS

TINY = ["--imgsz", "48", "--threads", "1", "--batch", "2", "--shots", "2", "--augment", "none", "--workers", "0",
        "--no-progress", "--min-pixels", "4", "--warmup", "2", "--val-episodes", "4", "--veca-episodes", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("seg") / "d", n=24)


def _log(out) -> list[dict[str, str]]:
    with (out / "log.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_log_has_veca_columns_and_edm_changes_training(data, tmp_path):
    args = ["--data", str(data), "--steps", "6", "--val-every", "3", "--veca-every", "3", "--save-every", "6", *TINY]
    assert vt.cli([*args, "--out", str(tmp_path / "plain")]) == 0
    assert vt.cli([*args, "--out", str(tmp_path / "edm"), "--edm-weight", "0.5", "--edm-groups", "2"]) == 0
    plain, edm = _log(tmp_path / "plain"), _log(tmp_path / "edm")
    for r in plain:
        due = int(r["step"]) % 3 == 0
        for name in ("veca_mid", "veca_high", "veca_head", "nveca_mid", "nveca_high", "nveca_head", "val_loss"):
            assert bool(r[name]) == due, (r["step"], name)
        assert not r["veca_low"] and not r["edm"]  # compact has no low level; EDM off
    assert float(plain[2]["veca_head"]) >= 0 and float(plain[2]["val_loss"]) > 0
    assert all(float(r["edm"]) >= 0 for r in edm) and set(VECA_FIELDS) <= set(edm[0])
    a, _ = load_guided_net(tmp_path / "plain" / "weights.safetensors")
    b, _ = load_guided_net(tmp_path / "edm" / "weights.safetensors")
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_veca_off_leaves_the_columns_empty(data, tmp_path):
    assert vt.cli(["--data", str(data), "--steps", "2", "--val-every", "0", "--veca-every", "0",
                   "--out", str(tmp_path / "r"), *TINY]) == 0
    assert all(not r[c] for r in _log(tmp_path / "r") for c in VECA_FIELDS)


@pytest.mark.parametrize("argv,needle", [
    (["--edm-weight", "-1"], "--edm-weight must be a number >= 0"),
    (["--edm-weight", "nan"], "--edm-weight must be a number >= 0"),
    (["--edm-weight", "abc"], "--edm-weight"),
    (["--edm-groups", "1"], "--edm-groups must be at least 2"),
    (["--edm-groups", "x"], "--edm-groups"),
    (["--edm-weight", "1", "--edm-groups", "3"], "does not divide the channels of high (160)"),
    (["--edm-weight", "1", "--edm-groups", "4", "--hidden", "18"], "head (18)"),
    (["--veca-every", "-1"], "--veca-every"),
    (["--veca-episodes", "1"], "--veca-episodes"),
])
def test_bad_edm_and_veca_flags_exit_2_with_one_line(data, tmp_path, argv, needle, capsys):
    assert microfarm.main(["train-segmenter", "--data", str(data), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["compact", "mobilenet_v3_small", "resnet18", "efficientnet_lite0"])
def test_channel_table_matches_the_backbones_and_the_taps(name):
    bb = build_backbone(name)
    assert tuple(BACKBONE_CHANNELS[name].values()) == tuple(bb.channels)
    model = GuidedNet(GuidedNetConfig(backbone=name, hidden=16)).eval()
    with LayerTaps(guided_net_layers(model)) as taps, torch.no_grad():
        model(torch.rand(1, 1, 3, 64, 64), torch.ones(1, 1, 1, 64, 64), torch.rand(1, 3, 64, 64))
        got = {k: int(v.shape[1]) for k, v in taps.outputs.items()}
    assert got == layer_channels(model) == {**BACKBONE_CHANNELS[name], "head": 16}
    assert taps.outputs == {}  # removed on exit
