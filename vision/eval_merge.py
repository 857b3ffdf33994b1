"""`microfarm eval-segmenter --merge RUN --merge RUN ...`: one table from several evaluations.

The PASCAL-5i protocol trains one network per held-out fold, so the four folds are four ``eval-segmenter`` runs
with four weights files. This joins their ``results.json`` into one results dict (folds side by side, the mean
over folds per shot count in the table), refusing runs that are not comparable: different shot counts,
methods or any setting of ``SAME_CONFIG`` (dataset, episodes, seed, input size, colour prior, CRF parameters,
...), a fold present twice, or a fold that was a training fold of its run's weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from microfarm_toolkit import UsageError
from models.flags import CRFFlags
from models.scales import DEFAULT_SCALES

__all__ = ["merge_results", "SAME_CONFIG"]

SAME_CONFIG = ("data", "episodes", "seed", "imgsz", "scales", "colour_prior", "min_pixels", "crf_episodes", "absent",
               "crf_gate", *(f.name for f in dataclasses.fields(CRFFlags)))


def _setting(res: dict[str, Any], key: str) -> Any:
    v = res["config"].get(key)
    if key == "scales":  # the set of ratios (order and repeats do not change the mean); none: before --scales
        return sorted({float(r) for r in v or DEFAULT_SCALES})
    return str(Path(v).resolve()) if key == "data" and v is not None else v


def _load(run: Path) -> tuple[Path, dict[str, Any]]:
    path = run / "results.json" if run.is_dir() else run
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"--merge: cannot read {path} ({e.__class__.__name__}); give folders written by "
                         "`microfarm eval-segmenter`") from None
    if not isinstance(res, dict) or not {"folds", "shots", "methods", "config"} <= set(res):
        raise UsageError(f"--merge: {path} is not an eval-segmenter results.json")
    return path, res


def merge_results(runs: list[Path]) -> dict[str, Any]:
    """``results.json`` of ``runs`` (folders or files) -> one results dict with every run's folds.

    Adds ``merged_from`` (the files) and ``weights_by_fold``; ``seconds_per_frame`` is the mean over runs."""
    loaded = [_load(Path(r)) for r in runs]
    path0, first = loaded[0]
    merged: dict[str, Any] = {"folds": {}, "shots": first["shots"], "methods": first["methods"],
                              "config": dict(first["config"]), "merged_from": [], "weights_by_fold": {}}
    for path, res in loaded:
        for key in ("shots", "methods"):
            if res[key] != first[key]:
                raise UsageError(f"--merge: {path} has {key} {res[key]}, {path0} {first[key]}; evaluate both with "
                                 "the same flags")
        for key in SAME_CONFIG:
            if _setting(res, key) != _setting(first, key):
                raise UsageError(f"--merge: {path} has --{key.replace('_', '-')} {_setting(res, key)}, {path0} "
                                 f"{_setting(first, key)}; evaluate both with the same flags")
        trained_on = (res.get("weights_extra") or {}).get("train_folds") or []
        for fold, cell in res["folds"].items():
            if fold in merged["folds"]:
                raise UsageError(f"--merge: fold {fold} is in two of the runs (one run per held-out fold)")
            if int(fold) in trained_on:
                raise UsageError(f"--merge: {path} scores fold {fold}, a training fold of its weights: not a "
                                 "held-out score")
            merged["folds"][fold] = cell
            merged["weights_by_fold"][fold] = res.get("weights_by_fold", {}).get(fold, res.get("weights"))
        merged["merged_from"].append(str(path))
    secs = [r.get("seconds_per_frame", {}) for _, r in loaded]
    merged["seconds_per_frame"] = {m: float(np.mean([s[m] for s in secs if m in s]))
                                   for m in first["methods"] if any(m in s for s in secs)}
    merged["folds"] = dict(sorted(merged["folds"].items(), key=lambda kv: int(kv[0])))
    merged["config"].update(fold=[int(f) for f in merged["folds"]], weights=None, out=None)
    return merged
