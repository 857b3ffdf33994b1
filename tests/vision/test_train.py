"""`microfarm train-segmenter`: learns on tiny data, writes its outputs, resumes exactly, stops on NaN,
rejects bad flags; the training augmentation keeps images and masks aligned."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from test_episodes import make_dataset

import microfarm
import vision.train as vt
import vision.train_data as vtd
from models.guided_net import GuidedNet, load_guided_net
from vision.augment import colour_shift, strong_augment
from vision.episodes import EpisodeSampler, SegmentationDataset
from vision.metrics import SegmentationMetrics

TINY = ["--imgsz", "48", "--threads", "1", "--batch", "4", "--shots", "2", "--augment", "none", "--workers", "0",
        "--no-progress", "--min-pixels", "4", "--warmup", "5", "--val-episodes", "8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("seg") / "d", n=24)


def _fb_iou(model: GuidedNet, root, folds, episodes: int = 24) -> float:
    sampler = EpisodeSampler(SegmentationDataset(root), folds, shots=1, min_pixels=4, seed=99, size=48)
    met = SegmentationMetrics()
    model.eval()
    with torch.no_grad():
        for i in range(episodes):
            ep = sampler.episode(i)
            s = torch.from_numpy(np.stack(ep.support_images)).permute(0, 3, 1, 2).float().div(255)[None]
            m = torch.from_numpy(np.stack(ep.support_masks)).float()[None, :, None]
            q = torch.from_numpy(ep.query_image).permute(2, 0, 1).float().div(255)[None]
            met.update(model(s, m, q).argmax(1)[0].numpy() == 1, ep.query_mask, ep.class_id)
    return met.fb_iou()


def test_training_beats_an_untrained_model_and_writes_outputs(data, tmp_path):
    out = tmp_path / "run"
    rc = vt.cli(["--data", str(data), "--out", str(out), "--steps", "60", "--lr", "3e-3", "--val-every", "30",
                 "--save-every", "30", *TINY])
    assert rc == 0
    for name in ("config.json", "log.csv", "loss.png", "val_miou.png", "summary.json", "weights.safetensors",
                 "checkpoint/model.safetensors", "checkpoint/optimizer.pt", "checkpoint/state.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 61))
    assert rows[29]["val_miou"] and rows[59]["val_miou"] and not rows[10]["val_miou"]
    opt_state = torch.load(out / "checkpoint" / "optimizer.pt", weights_only=True)
    assert "state" in opt_state and "param_groups" in opt_state
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 60 and summary["config"]["fold"] == 0
    model, extra = load_guided_net(out / "weights.safetensors")
    assert extra["fold"] == 0 and extra["train_folds"] == [1, 2, 3] and extra["imgsz"] == 48
    torch.manual_seed(0)
    fresh = GuidedNet()
    trained_fb, fresh_fb = _fb_iou(model, data, [1, 2, 3]), _fb_iou(fresh, data, [1, 2, 3])
    assert trained_fb > 0.5 and trained_fb > fresh_fb + 0.1, (trained_fb, fresh_fb)


def test_resume_continues_exactly_from_the_checkpoint(data, tmp_path, monkeypatch):
    args = ["--data", str(data), "--steps", "12", "--save-every", "6", "--val-every", "0", *TINY]
    vt.cli([*args, "--out", str(tmp_path / "straight")])

    real_save = vt._save_checkpoint

    def save_then_crash(ckpt, model, opt, step, cfg, extra):
        real_save(ckpt, model, opt, step, cfg, extra)
        if step == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(vt, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        vt.cli([*args, "--out", str(tmp_path / "crashed")])
    monkeypatch.setattr(vt, "_save_checkpoint", real_save)
    assert json.loads((tmp_path / "crashed" / "checkpoint" / "state.json").read_text())["step"] == 6
    assert not (tmp_path / "crashed" / "weights.safetensors").exists()
    assert vt.cli(["--resume", str(tmp_path / "crashed"), "--no-progress"]) == 0
    rows = list(csv.DictReader((tmp_path / "crashed" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    a, _ = load_guided_net(tmp_path / "straight" / "weights.safetensors")
    b, _ = load_guided_net(tmp_path / "crashed" / "weights.safetensors")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(va.float(), vb.float(), atol=1e-5), k
    # a finished run cannot be resumed without more steps; with more it continues
    assert microfarm.main(["train-segmenter", "--resume", str(tmp_path / "crashed"), "--no-progress"]) == 2
    assert vt.cli(["--resume", str(tmp_path / "crashed"), "--steps", "14", "--no-progress"]) == 0
    assert json.loads((tmp_path / "crashed" / "summary.json").read_text())["steps"] == 14


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    real_loss = vt.seg_loss
    calls = {"n": 0}

    def loss_goes_nan(logits, target, dice):
        calls["n"] += 1
        loss = real_loss(logits, target, dice)
        return loss * float("nan") if calls["n"] > 5 else loss

    monkeypatch.setattr(vt, "seg_loss", loss_goes_nan)
    out = tmp_path / "run"
    rc = vt.cli(["--data", str(data), "--out", str(out), "--steps", "20", "--save-every", "3", "--val-every", "0",
                 *TINY])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "loss became nan at step 5" in err and "last good checkpoint (step 3)" in err and "--lr" in err
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3
    model, extra = load_guided_net(out / "checkpoint" / "model.safetensors")
    assert extra["step"] == 3
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    assert not (out / "weights.safetensors").exists()


def test_backbone_weights_from_a_local_file(data, tmp_path):
    from safetensors.torch import save_file

    from models.backbones import build_backbone

    sd = {k: v.clone() for k, v in build_backbone("compact").state_dict().items()}
    path = tmp_path / "bb.safetensors"
    save_file(sd, str(path))
    out = tmp_path / "run"
    assert vt.cli(["--data", str(data), "--out", str(out), "--steps", "1", "--backbone-weights", str(path),
                   "--val-every", "0", *TINY]) == 0
    assert (out / "weights.safetensors").is_file()


def test_init_starts_from_saved_weights(data, tmp_path, capsys):
    first = tmp_path / "first"
    assert vt.cli(["--data", str(data), "--out", str(first), "--steps", "3", "--val-every", "0", *TINY]) == 0
    src, _ = load_guided_net(first / "weights.safetensors")
    # a near-zero learning rate: the new run's model is the --init model, not a fresh one (seed 5)
    out = tmp_path / "tuned"
    assert vt.cli(["--data", str(data), "--out", str(out), "--steps", "1", "--lr", "1e-12", "--seed", "5",
                   "--init", str(first / "weights.safetensors"), "--val-every", "0", *TINY]) == 0
    tuned, extra = load_guided_net(out / "weights.safetensors")
    assert extra["init"] == str(first / "weights.safetensors")
    # parameters only: one training step updates BatchNorm's running statistics
    for (k, va), vb in zip(src.named_parameters(), tuned.parameters(), strict=True):
        assert torch.allclose(va, vb, atol=1e-6), k
    # a model of another shape is refused with one line
    capsys.readouterr()
    assert microfarm.main(["train-segmenter", "--data", str(data), "--out", str(tmp_path / "bad"), "--hidden", "32",
                           "--init", str(first / "weights.safetensors"), "--steps", "1", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--init" in err, err


@pytest.mark.parametrize("argv,needle", [
    (["--stepz", "3"], "did you mean --steps"),
    (["--fold", "7"], "--fold"),
    ([], "--data is required"),
    (["--imgsz", "50"], "--imgsz"),
    (["--backbone", "nope"], "available"),
    (["--lr", "-1"], "--lr"),
    (["--augment", "extreme"], "choose one of"),
    (["--colour", "fancy"], "choose one of: episode, frame"),
    (["--backbone-weights", "/no/such/file.pt"], "does not exist"),
    (["--resume", "/no/such/run"], "not a train-segmenter run"),
    (["--init", "/no/such/weights.safetensors"], "does not exist"),
    (["--real-prob", "1.5"], "--real-prob"),
    (["--group-prob", "-0.1"], "--group-prob"),
    (["--encoder-lr", "-1"], "--encoder-lr"),
    (["--real-prob", "0.5", "--real-root", "/no/such/folder"], "not found at /no/such/folder"),
])
def test_bad_flags_exit_2_with_one_line(data, argv, needle, capsys):
    base = [] if (not argv or argv[0] in ("--resume",)) else ["--data", str(data)]
    if argv == []:
        base = []
    assert microfarm.main(["train-segmenter", *base, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_missing_dataset_exits_2(tmp_path, capsys):
    assert microfarm.main(["train-segmenter", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "index.json" in capsys.readouterr().err


def test_strong_augment_keeps_image_and_mask_aligned():
    size = 64
    img = np.full((96, 96, 3), (110, 80, 50), np.uint8)
    mask = np.zeros((96, 96), np.uint8)
    mask[30:60, 40:70] = 1
    img[mask == 1] = (40, 200, 40)
    for seed in range(20):
        a, m = strong_augment(img, mask, np.random.default_rng(seed), size, "strong", need_fg=True)
        assert a.shape == (size, size, 3) and a.dtype == np.uint8 and m.shape == (size, size)
        assert set(np.unique(m)) <= {0, 1} and m.any()
        b, m2 = strong_augment(img, mask, np.random.default_rng(seed), size, "strong", need_fg=True)
        assert np.array_equal(a, b) and np.array_equal(m, m2)
        # geometry is shared: the pixels inside the mask (the disc) differ from those outside (the soil)
        g, inner = a.astype(float), m.astype(bool)
        if inner.sum() > 30 and (~inner).sum() > 30:
            assert np.abs(g[inner].mean(0) - g[~inner].mean(0)).max() > 15, seed
    for mode in ("light", "none"):
        a, m = strong_augment(img, mask, np.random.default_rng(0), size, mode)
        assert a.shape == (size, size, 3) and m.shape == (size, size)


def test_episode_colour_is_shared_by_the_frames_of_an_episode():
    """--colour episode: the support and the query get one colour transform (plus a small jitter), so a leaf
    keeps nearly the same colour between them; drawn per frame, the colour differs far more."""
    img = np.full((64, 64, 3), (110, 80, 50), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 1
    img[mask == 1] = (60, 170, 60)

    def leaf_colour(a: np.ndarray, m: np.ndarray) -> np.ndarray:
        return a[m == 1].astype(float).mean(0)

    shared, independent = [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        ep = colour_shift(rng)
        a, b = (strong_augment(img, mask, rng, 48, "strong", need_fg=True, colour=ep) for _ in range(2))
        shared.append(np.abs(leaf_colour(*a) - leaf_colour(*b)).max())
        a, b = (strong_augment(img, mask, rng, 48, "strong", need_fg=True) for _ in range(2))
        independent.append(np.abs(leaf_colour(*a) - leaf_colour(*b)).max())
    assert np.median(shared) < 0.5 * np.median(independent), (np.median(shared), np.median(independent))


def test_training_with_episode_colour_runs(data, tmp_path):
    out = tmp_path / "ep"
    args = [a if a != "none" else "strong" for a in TINY]
    assert vt.cli(["--data", str(data), "--out", str(out), "--steps", "4", "--val-every", "0", "--colour",
                   "episode", *args]) == 0
    assert json.loads((out / "config.json").read_text())["colour"] == "episode"
    _, extra = load_guided_net(out / "weights.safetensors")
    assert extra["colour"] == "episode"


def test_data_parallel_under_torchrun_on_cpu(data, tmp_path):
    """Two gloo processes (the DDP path of a multi-GPU machine, on CPU): rank 0 logs and saves, the
    summary records the world size, and the saved model loads."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "microfarm", "train-segmenter", "--data", str(data), "--steps", "4", "--batch", "1", "--imgsz", "32",
           "--val-every", "0", "--val-episodes", "2", "--workers", "0", "--threads", "1", "--min-pixels", "20",
           "--out", str(out), "--no-progress"]
    p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    with open(out / "log.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]
    model, _ = load_guided_net(out / "weights.safetensors")
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())


def test_absent_queries_are_frames_without_the_species_and_all_background(data):
    """--absent-prob 1: every training query is a frame holding none of the episode's species, its target all
    background (or ignored); --absent-prob 0 keeps the species in every query."""
    ds = SegmentationDataset(data)
    for prob, want_fg in ((1.0, False), (0.0, True)):
        cfg = vt.TrainConfig(data=data, imgsz=48, shots=2, augment="none", min_pixels=4, absent_prob=prob)
        items = vtd.EpisodeData(ds, [1, 2, 3], cfg, per_step=4)
        for i in range(8):
            k = items.shots_of(i // 4)
            ep = items.samplers[k].episode(i)
            _, _, _, target = items[i]
            if want_fg:
                assert (target == 1).any()
            else:
                assert not (target == 1).any()
                j = items.samplers[k].absent_frame(i, ep.class_id)
                assert j is not None and ds.pixels[j].get(ep.class_id, 0) == 0
    with pytest.raises(microfarm.UsageError, match="--absent-prob"):
        vt.TrainConfig(data=data, absent_prob=1.5).validate()


def test_group_episodes_mark_every_training_species_of_the_group(data):
    cfg = vt.TrainConfig(data=data, imgsz=48, shots=2, augment="none", min_pixels=4, group_prob=1.0)
    ds = SegmentationDataset(data)
    ed = vtd.EpisodeData(ds, [1, 2, 3], cfg, per_step=4)
    assert "plants" in ed.groups
    ids, pool = ed.groups["plants"]
    assert set(ids) == set(ds.fold_classes([1, 2, 3]))
    rng = np.random.default_rng(0)
    imgs, masks, qimg, qmask, absent = ed._group_episode(0, 2, rng)
    assert len(imgs) == 2 and not absent and set(np.unique(qmask)) <= {0, 1, vtd.IGNORE}
    s, sm, q, qm = ed[0]
    assert s.shape == (ed.shots_of(0), 3, 48, 48) and qm.shape == (48, 48)


def test_pretrained_backbone_keeps_batch_norm_statistics(data, tmp_path, monkeypatch):
    """A pretrained encoder trains with its batch-norm statistics fixed and its own learning rate."""
    from models.backbones import compact

    weights = tmp_path / "bb.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in compact().state_dict().items()}, str(weights))
    out = tmp_path / "run"
    rc = vt.cli(["--data", str(data), "--out", str(out), "--steps", "4", "--val-every", "0", "--save-every", "4",
                 "--backbone-weights", str(weights), "--encoder-lr", "0", *TINY])
    assert rc == 0
    model, _ = load_guided_net(out / "weights.safetensors")
    start = compact()
    from safetensors.torch import load_file

    start.load_state_dict(load_file(str(weights)))
    # encoder lr 0 and frozen statistics: the encoder is exactly the file it started from
    for k, v in start.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[k], v), k
