"""`microfarm eval-segmenter`: results JSON with the metric keys, the markdown table, the examples PNG,
the same episodes for every method, and one-line exit-2 errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_episodes import make_dataset

import microfarm
import vision.evaluate as ve
from models.guided_net import GuidedNet, save_guided_net


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ev")
    data = make_dataset(root / "d", n=16, size=48)
    torch.manual_seed(0)
    weights = save_guided_net(GuidedNet(), root / "w.safetensors",
                              extra={"fold": 1, "train_folds": [0, 2, 3], "imgsz": 48})
    return data, weights


def test_eval_writes_results_table_and_examples(setup, tmp_path, capsys):
    data, weights = setup
    out = tmp_path / "ev"
    rc = microfarm.main(["eval-segmenter", "--data", str(data), "--weights", str(weights), "--out", str(out),
                         "--episodes", "4", "--shots", "1", "--shots", "2", "--imgsz", "48", "--examples", "3",
                         "--no-progress", "--threads", "1"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["folds"]) == ["1"]  # the weights' held-out fold by default
    assert res["shots"] == [1, 2]
    assert res["methods"] == ["none", "colour", "dense", "meanfield", "colour_dense", "colour_meanfield",
                              "colour_dense_gated", "colour_meanfield_gated", "exg_otsu", "histogram"]
    for k in ("1", "2"):
        for m in res["methods"]:
            r = res["folds"]["1"][k][m]
            assert set(r) >= {"miou", "fb_iou", "episodes", "class_iou"}
            assert 0 <= r["miou"] <= 1 and 0 <= r["fb_iou"] <= 1 and r["episodes"] == 4
            assert list(r["class_iou"]) == ["2"]  # fold 1 = species 2
            assert r["absent_frames"] == 4 and 0 <= r["absent_marked"] <= 1 and 0 <= r["absent_alarm"] <= 1
            assert 0 <= r["feed_miou"] <= r["miou"]  # absent frames can only add false positives
            assert (0 <= r["crf_kept"] <= 1) if m.endswith("_gated") else "crf_kept" not in r
    assert set(res["seconds_per_frame"]) == set(res["methods"])
    table = (out / "results.md").read_text()
    assert "ExG + Otsu" in table and "fold 1 1-shot mIoU / FB-IoU" in table and "colour prior + dense" in table
    assert "Frames WITHOUT the class" in table and "mean-field CRF, gated: the gate kept the CRF for" in table
    assert (out / "examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "results.json" in capsys.readouterr().out


def test_baselines_see_the_same_episodes_whatever_the_crfs(setup, tmp_path):
    data, weights = setup
    common = ["--data", str(data), "--weights", str(weights), "--episodes", "5", "--shots", "1", "--imgsz", "48",
              "--examples", "0", "--no-progress", "--fold", "1"]
    assert ve.cli([*common, "--out", str(tmp_path / "a"), "--crf", "off"]) == 0
    assert ve.cli([*common, "--out", str(tmp_path / "b"), "--crf", "meanfield", "--crf-episodes", "2"]) == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())["folds"]["1"]["1"]
    b_res = json.loads((tmp_path / "b" / "results.json").read_text())
    b = b_res["folds"]["1"]["1"]
    assert set(a) == {"none", "colour", "exg_otsu", "histogram"}
    assert set(b) == {"none", "colour", "none_subset", "colour_subset", "meanfield", "colour_meanfield",
                      "colour_meanfield_gated", "exg_otsu", "histogram"}
    for m in ("none", "colour", "exg_otsu", "histogram"):
        assert a[m]["miou"] == pytest.approx(b[m]["miou"])
    for m in ("meanfield", "none_subset", "colour_meanfield", "colour_subset", "colour_meanfield_gated"):
        assert b[m]["episodes"] == 2
    assert b["colour_meanfield_gated"]["crf_kept"] in (0.0, 0.5, 1.0)  # a share of the 2 CRF episodes
    assert "first 2" in (tmp_path / "b" / "results.md").read_text()


def test_colour_prior_rows_are_the_blend_of_network_and_histogram(setup, tmp_path):
    """--colour-prior 0 drops the colour rows; with --fusion blend, 1 makes the blend the histogram baseline; the
    network row is the same whatever the weight and the fusion; the default --fusion fit changes the colour rows."""
    data, weights = setup
    common = ["--data", str(data), "--weights", str(weights), "--episodes", "5", "--shots", "2", "--imgsz", "48",
              "--examples", "0", "--no-progress", "--fold", "1", "--crf", "off"]
    res = {}
    for w in ("0", "1", "0.5"):
        assert ve.cli([*common, "--out", str(tmp_path / w), "--colour-prior", w, "--fusion", "blend"]) == 0
        res[w] = json.loads((tmp_path / w / "results.json").read_text())["folds"]["1"]["2"]
    assert set(res["0"]) == {"none", "exg_otsu", "histogram"}
    assert res["1"]["colour"]["miou"] == pytest.approx(res["1"]["histogram"]["miou"])
    assert res["0"]["none"]["miou"] == pytest.approx(res["0.5"]["none"]["miou"])
    assert res["0.5"]["colour"]["episodes"] == 5
    assert ve.cli([*common, "--out", str(tmp_path / "fit"), "--colour-prior", "0.5"]) == 0
    fit = json.loads((tmp_path / "fit" / "results.json").read_text())["folds"]["1"]["2"]
    assert fit["none"]["miou"] == pytest.approx(res["0.5"]["none"]["miou"])  # only the colour rows change
    assert fit["colour"]["episodes"] == 5 and fit["colour"]["miou"] != res["0.5"]["colour"]["miou"]


def test_absent_frames_are_scored_on_frames_without_the_class(setup, tmp_path):
    """--absent: each method also runs on a frame holding none of the episode's class; a method that marks
    everything (the histogram of a support that is all foreground would) is caught by the alarm rate."""
    from vision.episodes import EpisodeSampler, SegmentationDataset
    from vision.metrics import AbsentMetrics, SegmentationMetrics

    data, weights = setup
    sampler = EpisodeSampler(SegmentationDataset(data), [1], shots=1, min_pixels=64, seed=12346)
    for i in range(5):
        ep = sampler.episode(i)
        j = sampler.absent_frame(i, ep.class_id)
        assert j is not None and sampler.dataset.pixels[j].get(ep.class_id, 0) == 0
    m = AbsentMetrics()
    m.update(np.ones((4, 4), bool), 7)
    m.update(np.zeros((4, 4), bool), 7)
    assert m.summary() == {"absent_frames": 2, "absent_marked": 0.5, "absent_alarm": 0.5}
    present = SegmentationMetrics()  # class 7: 4 of 8 true pixels found, nothing else marked: IoU 0.5
    truth = np.zeros((4, 4), bool)
    truth[:2] = True
    pred = np.zeros((4, 4), bool)
    pred[0] = True
    present.update(pred, truth, 7)
    assert present.miou() == 0.5
    assert m.feed_miou(present) == 4 / (8 + 16)  # the 16 pixels marked on the absent frame join the union
    assert m.summary(present)["feed_miou"] == m.feed_miou(present)
    common = ["--data", str(data), "--weights", str(weights), "--episodes", "3", "--shots", "1", "--imgsz", "48",
              "--examples", "0", "--no-progress", "--fold", "1", "--crf", "off"]
    assert ve.cli([*common, "--out", str(tmp_path / "n"), "--no-absent"]) == 0
    r = json.loads((tmp_path / "n" / "results.json").read_text())["folds"]["1"]["1"]["none"]
    assert "absent_marked" not in r


@pytest.mark.parametrize("gain,kept", [((0.2, 0.5), 1.0), ((0.5, 0.2), 0.0)])
def test_gated_rows_follow_the_support_check(setup, tmp_path, monkeypatch, gain, kept):
    """A gated row is the CRF row where the support check keeps the CRF and the row without CRF where it does not,
    on the present and the absent frames; --no-crf-gate drops the gated rows."""
    data, weights = setup
    common = ["--data", str(data), "--weights", str(weights), "--episodes", "4", "--shots", "2", "--imgsz", "48",
              "--examples", "0", "--no-progress", "--fold", "1", "--crf", "meanfield", "--no-baselines"]
    calls = []

    def check(shots, fused, refine, threshold=0.5):
        calls.append(len(shots))
        fused(shots[0][0])  # the real callables work on a support image
        return gain

    monkeypatch.setattr(ve, "support_crf_gain", check)
    assert ve.cli([*common, "--out", str(tmp_path / "g")]) == 0
    r = json.loads((tmp_path / "g" / "results.json").read_text())["folds"]["1"]["2"]
    assert calls == [2] * 4  # once per episode, on its 2 support shots
    same = r["colour_meanfield" if kept else "colour"]
    g = r["colour_meanfield_gated"]
    assert g["crf_kept"] == kept
    for key in ("miou", "fb_iou", "absent_marked", "feed_miou"):
        assert g[key] == pytest.approx(same[key])
    assert ve.cli([*common, "--out", str(tmp_path / "n"), "--no-crf-gate"]) == 0
    assert "colour_meanfield_gated" not in json.loads((tmp_path / "n" / "results.json").read_text())["methods"]


@pytest.mark.parametrize("argv,needle", [
    (["--colour-prior", "1.5"], "--colour-prior must be in [0, 1]"),
    (["--episodes", "0"], "--episodes"),
    (["--crf", "bogus"], "--crf"),
    (["--shots", "0"], "--shots"),
    (["--fold", "9"], "--fold"),
    (["--scales", "0"], "--scales 0 is not valid"),
    (["--weights", "/no/such.safetensors"], "does not exist"),
    (["--episodez", "3"], "did you mean --episodes"),
    (["--fusion", "mean"], "--fusion"),
])
def test_bad_flags_exit_2_with_one_line(setup, tmp_path, argv, needle, capsys):
    data, weights = setup
    base = ["--data", str(data), "--out", str(tmp_path / "o"), "--no-progress"]
    if "--weights" not in argv:
        base += ["--weights", str(weights)]
    assert microfarm.main(["eval-segmenter", *base, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_missing_data_flag_exits_2(capsys):
    assert microfarm.main(["eval-segmenter"]) == 2
    assert "--data is required" in capsys.readouterr().err


def test_merge_joins_one_run_per_fold_and_refuses_mismatches(setup, tmp_path, capsys):
    """--merge: the PASCAL-5i table of one network per held-out fold; runs evaluated with other flags, or the
    same fold twice, exit 2 without creating the output folder."""
    data, weights = setup
    w2 = save_guided_net(GuidedNet(), tmp_path / "w2.safetensors",
                         extra={"fold": 2, "train_folds": [0, 1, 3], "imgsz": 48})
    common = ["--data", str(data), "--episodes", "3", "--shots", "1", "--imgsz", "48", "--examples", "0",
              "--no-progress", "--threads", "1", "--crf", "off", "--no-baselines"]
    assert ve.cli([*common, "--weights", str(weights), "--out", str(tmp_path / "f1")]) == 0
    assert ve.cli([*common, "--weights", str(w2), "--out", str(tmp_path / "f2")]) == 0
    assert ve.cli([*common, "--weights", str(w2), "--out", str(tmp_path / "f2b"), "--colour-prior", "0"]) == 0
    assert ve.cli([*common, "--weights", str(w2), "--out", str(tmp_path / "f2c"), "--no-crf-gate"]) == 0
    two = ["--scales", "1", "--scales", "2"]
    assert ve.cli([*common, "--weights", str(w2), "--out", str(tmp_path / "f2d"), *two]) == 0
    assert json.loads((tmp_path / "f2d" / "results.json").read_text())["config"]["scales"] == [1.0, 2.0]
    assert "network input 48x48 and 96x96 (probabilities averaged)" in (tmp_path / "f2d" / "results.md").read_text()
    f2 = json.loads((tmp_path / "f2" / "results.json").read_text())
    del f2["config"]["scales"]  # a run from before --scales: the network at --imgsz alone, merges with the default
    (tmp_path / "f2" / "results.json").write_text(json.dumps(f2))
    capsys.readouterr()
    assert ve.cli(["--merge", str(tmp_path / "f2"), "--merge", str(tmp_path / "f1"), "--out", str(tmp_path / "m")]) == 0
    res = json.loads((tmp_path / "m" / "results.json").read_text())
    one = {f: json.loads((tmp_path / f"f{f}" / "results.json").read_text())["folds"][f] for f in ("1", "2")}
    assert list(res["folds"]) == ["1", "2"] and res["folds"] == one
    assert res["weights_by_fold"] == {"1": str(weights), "2": str(w2)} and res["config"]["fold"] == [1, 2]
    # a fold the weights were trained on is refused (w2 was trained on fold 1)
    with pytest.warns(UserWarning, match="training folds"):
        assert ve.cli([*common, "--weights", str(w2), "--fold", "1", "--out", str(tmp_path / "leak")]) == 0
    table = (tmp_path / "m" / "results.md").read_text()
    mean = np.mean([one[f]["1"]["none"]["miou"] for f in ("1", "2")])
    assert "mean 1-shot mIoU" in table and f"| {100 * mean:.1f} |" in table.splitlines()[2]
    for argv, needle in [([str(tmp_path / "f1"), str(tmp_path / "f2b")], "methods"),
                         ([str(tmp_path / "f1"), str(tmp_path / "f1")], "fold 1 is in two"),
                         ([str(tmp_path / "f1"), str(tmp_path / "f2c")], "--crf-gate False"),
                         ([str(tmp_path / "f1"), str(tmp_path / "f2d")], "--scales [1.0, 2.0]"),
                         ([str(tmp_path / "f1"), str(tmp_path / "nothing")], "cannot read"),
                         ([str(tmp_path / "f2"), str(tmp_path / "leak")], "a training fold of its weights"),
                         ([str(tmp_path / "f1"), str(tmp_path / "f2"), "--episodes", "5"], "takes only --out")]:
        out = tmp_path / "bad"
        rc = microfarm.main(["eval-segmenter", "--merge", argv[0], "--merge", argv[1], *argv[2:], "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1 and not out.exists()
