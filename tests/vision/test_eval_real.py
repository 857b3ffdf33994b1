"""`microfarm eval-real`: a tiny run on the real photos (skipped where they are absent), its episodes, and
one-line exit-2 errors for bad input that leave what was already written alone."""

from __future__ import annotations

import json

import pytest
from test_real_data import fake_tree, real_set

import microfarm
from vision.eval_real import METHODS, sample_episodes
from vision.real_data import ENV_VAR, REAL_SETS


def test_tiny_run_on_the_real_photos(tmp_path, capsys):
    real_set("peanut"), real_set("cwf788")  # skip where the photos are absent
    out = tmp_path / "er"
    rc = microfarm.main(["eval-real", "--set", "all", "--episodes", "2", "--shots", "1", "--max-side", "128",
                         "--imgsz", "64", "--examples", "1", "--no-progress", "--threads", "1", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["methods"] == list(METHODS) and res["shots"] == [1]
    assert {n: list(s["tasks"]) for n, s in res["sets"].items()} == {n: list(t) for n, t in REAL_SETS.items()}
    for s in res["sets"].values():
        for c in s["tasks"].values():
            for m in METHODS:
                r = c["1"][m]
                assert 0 <= r["iou"] <= 1 and 0 <= r["mean_iou"] <= 1 and r["episodes"] == 2
                assert r["seconds_per_episode"] >= 0
            assert 0 <= c["1"]["pipeline"]["crf_kept"] <= 1
    assert res["sets"]["peanut"]["tasks"]["vegetation"]["1"]["exg_otsu"]["iou"] > 0.3  # images and masks line up
    assert res["config"]["max_side"] == 128 and res["config"]["crf"] == "meanfield"
    for name in REAL_SETS:
        assert (out / f"examples_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "results.md").read_text()
    assert "| peanut / weed |" in table and "| cwf788 / crop |" in table and "ExG+Otsu 1-shot" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 8 and "examples_peanut.png" in summary["files"]
    printed = capsys.readouterr().out
    assert "| peanut / vegetation |" in printed and "results.json" in printed


def test_episodes_are_deterministic_and_follow_the_protocol():
    cwf, pea = real_set("cwf788"), real_set("peanut")
    a = sample_episodes(cwf, "crop", 3, min_pixels=200, max_side=128, seed=5)
    assert a == sample_episodes(cwf, "crop", 3, min_pixels=200, max_side=128, seed=5)
    assert a != sample_episodes(cwf, "crop", 3, min_pixels=200, max_side=128, seed=6)
    one = sample_episodes(cwf, "crop", 3, min_pixels=200, max_side=128, seed=5, max_shots=1)
    assert [e.supports for e in one] == [e.supports[:1] for e in a]  # 1-shot = the first of the 5-shot supports
    test = {it.stem for it in cwf.items("test")}
    for e in a:
        assert len(e.supports) == 5 and e.query.stem not in {s.stem for s in e.supports}
        assert {e.query.stem, *(s.stem for s in e.supports)} <= test
        assert all(cwf.pixel_counts(it, 128)["crop"] >= 200 for it in (e.query, *e.supports))
    b = sample_episodes(pea, "crop", 2, min_pixels=200, max_side=128, seed=0)
    queries = {it.stem for it in pea.items("query")}
    for e in b:
        assert e.query.stem in queries and not {s.stem for s in e.supports} & queries
        assert int(e.query.stem) <= 320 and all(int(s.stem) <= 320 for s in e.supports)  # 0321-0400 hold no crop


def test_fake_tree_runs_end_to_end(tmp_path):
    """A synthetic tree (no real photo): the command runs, skips a shot count with too few supports."""
    root = fake_tree(tmp_path / "real")
    out = tmp_path / "o"
    rc = microfarm.main(["eval-real", "--real-root", str(root), "--set", "cwf788", "--episodes", "2", "--shots", "1",
                         "--shots", "4", "--max-side", "32", "--imgsz", "32", "--min-pixels", "10", "--examples", "1",
                         "--no-progress", "--crf", "none", "--out", str(out)])
    assert rc == 0
    cell = json.loads((out / "results.json").read_text())["sets"]["cwf788"]["tasks"]["crop"]
    assert cell["1"]["network"]["episodes"] == 2 and "4" not in cell and "4" in cell["skipped_shots"]
    assert (out / "examples_cwf788.png").is_file()


def test_adapted_rows_on_the_same_episodes(tmp_path):
    """With --adapt-steps the network and the pipeline are scored again after adapting to each episode's support."""
    root = fake_tree(tmp_path / "real")
    out = tmp_path / "o"
    rc = microfarm.main(["eval-real", "--real-root", str(root), "--set", "cwf788", "--episodes", "2", "--shots", "1",
                         "--max-side", "32", "--imgsz", "32", "--min-pixels", "10", "--examples", "0",
                         "--no-progress", "--crf", "none", "--adapt-steps", "2", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["methods"][-2:] == ["network_adapted", "pipeline_adapted"]
    cell = res["sets"]["cwf788"]["tasks"]["crop"]["1"]
    assert cell["network_adapted"]["episodes"] == cell["network"]["episodes"] == 2
    assert "network adapted 1-shot" in (out / "results.md").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--shots", "7"], "--shots"), (["--episodes", "0"], "--episodes"), (["--max-side", "16"], "--max-side"),
    (["--colour-prior", "1.5"], "--colour-prior"), (["--set", "cwf788", "--task", "weed"], "weed"),
    (["--task", "leaf"], "leaf"), (["--crf", "fancy"], "--crf"), (["--real-root", "/nonexistent"], "/nonexistent"),
    (["--adapt", "-2"], "--adapt"), (["--adapt", "many"], "--adapt"),
    (["--adapt", "1", "--save-adapted", "a.safetensors"], "eval-real adapts a copy"),
])
def test_bad_input_exits_2_with_one_line(args, needle, tmp_path, capsys):
    out = tmp_path / "kept"
    out.mkdir()
    (out / "results.json").write_text("earlier run")
    rc = microfarm.main(["eval-real", *args, "--no-progress", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert (out / "results.json").read_text() == "earlier run" and sorted(p.name for p in out.iterdir()) == [
        "results.json"]
    new = tmp_path / "new"
    assert microfarm.main(["eval-real", *args, "--out", str(new)]) == 2 and not new.exists()


def test_env_override_is_honoured(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "elsewhere"
    monkeypatch.setenv(ENV_VAR, str(missing))
    assert microfarm.main(["eval-real", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "../shared/data/real" in err
    monkeypatch.setenv(ENV_VAR, str(fake_tree(tmp_path / "fake")))
    out = tmp_path / "o2"
    assert microfarm.main(["eval-real", "--set", "peanut", "--task", "weed", "--episodes", "1", "--shots", "1",
                           "--max-side", "32", "--imgsz", "32", "--min-pixels", "5", "--examples", "0",
                           "--no-progress", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["real_root"] == str(tmp_path / "fake") and list(res["sets"]["peanut"]["tasks"]) == ["weed"]
    assert not list(out.glob("examples_*.png"))
