"""`microfarm eval-real`: the few-shot segmenter on real field photographs (``vision.real_data``).

Sets and tasks (``REAL_SETS``): Peanut (``vegetation``, ``crop``, ``weed``; queries from its fixed split
"query", supports from "support") and CWF-788 (``crop``; query and supports from its "test" split, the
supports never the query). For every set x task, ``--episodes`` episodes, deterministic from ``--seed``:
episode i has one query and up to five supports, each holding at least ``--min-pixels`` pixels of the task's
class at ``--max-side`` (the usual few-shot protocol); the K-shot support is the first K of them, so 1-shot and
5-shot see the same queries, and queries go through the eligible ones in shuffled passes before any repeats.
On exactly those episodes four methods are scored, all at ``--max-side`` against the truth mask:

- ``network``: the guided network alone (no colour prior, no CRF), input ``--imgsz``;
- ``pipeline``: the default ``microfarm segment`` pipeline, the same network with the support's colour
  histogram (``--colour-prior``) and excess green, weighed by ``--fusion``, then the CRF (``--crf``) behind the
  CRF gate (``--crf-gate``);
- ``exg_otsu``: excess green 2G - R - B (channels over 255) + Otsu (``vision.baselines``; ignores the support:
  every green pixel); ``exg_chromatic``: the same on chromatic coordinates (the simulator table's form, much
  weaker on dark soil);
- ``colour_hist``: colour-histogram back-projection fitted on the support.

Metric per (set, task, shots, method): IoU = the intersections summed over the episodes / the unions summed
(class-wise foreground IoU, the PASCAL definition), the mean per-episode IoU, the episode count and the
seconds per episode (the network and pipeline: the guide from the support plus the query; the pipeline's
includes the gate's check on the supports).

Writes into ``runs/eval-real/<N>/`` (or ``--out``): ``results.json`` (the config and every figure),
``results.md`` (the table: rows set / task, columns method x shots), ``examples_<set>.png`` (per row one
episode: support with its mask, query, truth, network, pipeline, ExG) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microfarm_toolkit import UsageError, atomic_write_json, atomic_write_text, next_run_dir, parse_config
from vision.baselines import HistogramBackprojection, exg_otsu
from vision.eval_real_config import ADAPTED, DEFAULT_WEIGHTS, GRID, MAX_SHOTS, METHODS, SPLITS, EvalRealConfig
from vision.eval_real_report import example_grid, markdown_table, overall_seconds
from vision.real_data import RealItem, RealSet

__all__ = ["EvalRealConfig", "Episode", "sample_episodes", "evaluate_real", "markdown_table", "cli", "METHODS"]

@dataclasses.dataclass(frozen=True)
class Episode:
    """One query and up to ``MAX_SHOTS`` supports; the K-shot episode uses ``supports[:K]``."""

    set: str
    task: str
    index: int
    query: RealItem
    supports: tuple[RealItem, ...]


def _crc(s: str) -> int:
    return zlib.crc32(s.encode())


def sample_episodes(rs: RealSet, task: str, episodes: int, min_pixels: int, max_side: int, seed: int,
                    max_shots: int = MAX_SHOTS) -> list[Episode]:
    """``episodes`` episodes of ``task`` on ``rs``, deterministic from ``seed``: queries walk the eligible query
    photos in shuffled passes; episode i's supports are the first ``max_shots`` eligible photos of a shuffle of
    the support split (never the query). Eligible: >= ``min_pixels`` of the task's class at ``max_side``.
    Labels are read lazily (only as far as the shuffles go). [] when no photo is eligible as a query; fewer
    than ``max_shots`` supports when the split has fewer eligible ones."""
    qsplit, ssplit = SPLITS[rs.name]
    queries, pool = rs.items(qsplit), rs.items(ssplit)

    def ok(item: RealItem) -> bool:
        return rs.pixel_counts(item, max_side)[task] >= min_pixels

    base = [int(seed) & 0xFFFFFFFF, _crc(rs.name), _crc(task)]
    rng = np.random.default_rng(base)
    chosen: list[RealItem] = []
    while len(chosen) < episodes:
        passed = [queries[j] for j in rng.permutation(len(queries)) if ok(queries[j])]
        if not passed:
            return []
        chosen += passed[:episodes - len(chosen)]
    out = []
    for i, q in enumerate(chosen):
        order = np.random.default_rng([*base, 1, i]).permutation(len(pool))
        sup: list[RealItem] = []
        for j in order:
            if pool[j].stem != q.stem and ok(pool[j]):
                sup.append(pool[j])
                if len(sup) == max_shots:
                    break
        out.append(Episode(rs.name, task, i, q, tuple(sup)))
    return out


class _Score:
    """Intersections, unions, per-episode IoUs and seconds of one (set, task, shots, method)."""

    def __init__(self) -> None:
        self.inter = self.union = 0
        self.ious: list[float] = []
        self.seconds = 0.0
        self.crf_on = 0

    def update(self, pred: np.ndarray, truth: np.ndarray, seconds: float) -> float:
        i, u = int(np.count_nonzero(pred & truth)), int(np.count_nonzero(pred | truth))
        self.inter += i
        self.union += u
        iou = i / u if u else 1.0
        self.ious.append(iou)
        self.seconds += seconds
        return iou

    def summary(self) -> dict[str, Any]:
        n = len(self.ious)
        return {"iou": self.inter / self.union if self.union else 1.0, "mean_iou": float(np.mean(self.ious)),
                "episodes": n, "seconds_per_episode": self.seconds / n, "intersection": self.inter,
                "union": self.union}


def _label(cfg: EvalRealConfig) -> str:
    """The pipeline method in words."""
    crf = {"meanfield": "mean-field CRF", "dense": "dense CRF", "none": "no CRF"}[cfg.crf]
    gate = ", gated" if cfg.crf_gate and cfg.crf != "none" else ""
    colour = f"colour prior {cfg.colour_prior:g}"
    if cfg.fusion == "fit":
        colour = f"cues fitted on the support (fallback: {colour})"
    return f"network + {colour} + {crf}{gate}"


def evaluate_real(cfg: EvalRealConfig, sets: Sequence[RealSet], model: Any, extra: dict[str, Any],
                  weights: Path, out: Path) -> dict[str, Any]:
    """Score every method on the episodes of ``cfg``; writes results.json, results.md, examples_<set>.png and
    summary.json into ``out``; returns the results."""
    from vision.predictor import FewShotSegmenter

    shots = cfg.shot_list()
    max_shots = max(shots)
    network = FewShotSegmenter(model, crf="none", colour_prior=0.0, crf_gate=False, imgsz=cfg.imgsz,
                               device=cfg.device)
    pipeline = FewShotSegmenter(model, crf=cfg.crf, colour_prior=cfg.check_colour_prior(), crf_gate=cfg.crf_gate,
                                imgsz=cfg.imgsz, device=cfg.device, crf_params=cfg.crf_params(), fusion=cfg.fusion)
    t_all = time.perf_counter()
    plan = {rs.name: {t: sample_episodes(rs, t, cfg.episodes, cfg.min_pixels, cfg.max_side, cfg.seed, max_shots)
                      for t in cfg.tasks_of(rs.name)} for rs in sets}
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        total = sum(len(eps) for tasks in plan.values() for eps in tasks.values()) * len(shots)
        bar = tqdm(total=total, desc="eval-real", unit="episode", dynamic_ncols=True)

    methods = METHODS + (ADAPTED if cfg.adapting else ())
    adapted_net = adapted_pipe = None
    if cfg.adapting:
        adapted_net = FewShotSegmenter(model, crf="none", colour_prior=0.0, crf_gate=False, imgsz=cfg.imgsz,
                                       device=cfg.device)
        adapted_pipe = FewShotSegmenter(model, crf=cfg.crf, colour_prior=cfg.check_colour_prior(),
                                        crf_gate=cfg.crf_gate, imgsz=cfg.imgsz, device=cfg.device,
                                        crf_params=cfg.crf_params(), fusion=cfg.fusion)

    def run(method: str, imgs: list[np.ndarray], masks: list[np.ndarray], q: np.ndarray) -> np.ndarray:
        if method in ADAPTED:
            seg = adapted_net if method == "network_adapted" else adapted_pipe
            assert seg is not None
            if method == "network_adapted":  # one adaptation per episode, shared by both adapted methods
                from vision.adapt import adapt

                net, _ = adapt(model, [(imgs, masks)], seconds=cfg.adapt, steps=cfg.adapt_steps,
                               part=cfg.adapt_part, seed=cfg.seed, progress=False)
                adapted_net.set_model(net)  # type: ignore[union-attr]
                adapted_pipe.set_model(net)  # type: ignore[union-attr]
            seg.set_support(imgs, masks)
            return seg.predict(q)[1] > 0
        if method == "network":
            network.set_support(imgs, masks)
            return network.predict(q)[1] > 0
        if method == "pipeline":
            pipeline.set_support(imgs, masks)
            return pipeline.predict(q)[1] > 0
        if method == "exg_otsu":
            return exg_otsu(q, chromatic=False)
        if method == "exg_chromatic":
            return exg_otsu(q)
        return HistogramBackprojection().fit(imgs, masks).predict(q)

    results: dict[str, Any] = {"command": "eval-real", "methods": list(methods), "shots": shots,
                               "pipeline": _label(cfg), "sets": {}}
    grids: dict[str, list[dict[str, Any]]] = {}
    try:
        for rs in sets:
            qsplit, ssplit = SPLITS[rs.name]
            entry: dict[str, Any] = {"query_split": qsplit, "support_split": ssplit, "tasks": {}}
            results["sets"][rs.name] = entry
            rows = grids.setdefault(rs.name, [])
            for task, eps in plan[rs.name].items():
                scores = {k: {m: _Score() for m in methods} for k in shots}
                skipped: dict[str, str] = {}
                shown = 0
                for ep in eps:
                    q = rs.image(ep.query, cfg.max_side)
                    truth = rs.masks(ep.query, cfg.max_side)[task]
                    s_imgs = [rs.image(s, cfg.max_side) for s in ep.supports]
                    s_masks = [rs.masks(s, cfg.max_side)[task] for s in ep.supports]
                    for k in shots:
                        if bar is not None:
                            bar.update(1)
                        if len(ep.supports) < k:
                            skipped[str(k)] = (f"only {len(ep.supports)} {ssplit} photos hold >= {cfg.min_pixels} "
                                               f"{task} pixels")
                            continue
                        preds, ious = {}, {}
                        for m in methods:
                            t = time.perf_counter()
                            preds[m] = run(m, s_imgs[:k], s_masks[:k], q)
                            ious[m] = scores[k][m].update(preds[m], truth, time.perf_counter() - t)
                        scores[k]["pipeline"].crf_on += int(pipeline.crf != "none" and pipeline.crf_on)
                        if k == shots[0] and shown < cfg.examples:
                            shown += 1
                            rows.append({"support": s_imgs[0], "support_mask": s_masks[0], "query": q, "truth": truth,
                                         "preds": {m: preds[m] for m in GRID}, "ious": {m: ious[m] for m in GRID},
                                         "title": f"{task}, {k}-shot\nquery {ep.query.stem}"})
                cell: dict[str, Any] = {"queries": len({ep.query.stem for ep in eps})}
                if not eps:
                    cell["skipped"] = f"no {qsplit} photo holds >= {cfg.min_pixels} {task} pixels at --max-side"
                for k in shots:
                    if scores[k]["network"].ious:
                        cell[str(k)] = {m: scores[k][m].summary() for m in methods}
                        if cfg.crf != "none":
                            cell[str(k)]["pipeline"]["crf_kept"] = (scores[k]["pipeline"].crf_on
                                                                    / len(scores[k]["pipeline"].ious))
                if skipped:
                    cell["skipped_shots"] = skipped
                entry["tasks"][task] = cell
    finally:
        if bar is not None:
            bar.close()
    results["seconds_per_episode"] = overall_seconds(results)
    results["seconds"] = time.perf_counter() - t_all
    results["weights"] = str(weights)
    results["weights_extra"] = extra
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    results["config"]["shots"] = shots
    results["config"]["real_root"] = str(sets[0].root.parent) if sets else None
    table = markdown_table(results)
    written = ["results.json", "results.md"]
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", table)
    for name, rows in grids.items():
        if rows:
            example_grid(out / f"examples_{name}.png", rows, f"{name}: support (its mask outlined), query, truth "
                         f"and predictions (magenta; truth outlined in cyan), IoU under each")
            written.append(f"examples_{name}.png")
    summary = {"command": "eval-real", "out": str(out), "seconds": round(results["seconds"], 1),
               "episodes": sum(c[str(k)]["network"]["episodes"] for s in results["sets"].values()
                               for c in s["tasks"].values() for k in shots if str(k) in c),
               "sets": {n: list(s["tasks"]) for n, s in results["sets"].items()}, "shots": shots,
               "iou": {f"{n}/{t}/{k}-shot/{m}": round(c[str(k)][m]["iou"], 4) for n, s in results["sets"].items()
                       for t, c in s["tasks"].items() for k in shots if str(k) in c for m in methods},
               "seconds_per_episode": {m: round(v, 4) for m, v in results["seconds_per_episode"].items()},
               "files": [*written, "summary.json"]}
    atomic_write_json(out / "summary.json", summary)
    return results


def cli(argv: list[str]) -> int:
    cfg = parse_config(EvalRealConfig, argv, prog="microfarm eval-real")
    cfg.validate()
    sets = [RealSet(name, cfg.real_root) for name in cfg.set_names()]  # RealDataMissing before anything is written
    weights = Path(cfg.weights) if cfg.weights is not None else DEFAULT_WEIGHTS
    import torch

    from models.guided_net import load_guided_net
    from models.weights import WeightsError

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for but CUDA is not available; use --device cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        model, extra = load_guided_net(weights, cfg.device)
    except WeightsError as e:
        raise UsageError(str(e).replace("\n", " ")) from None
    out = next_run_dir("eval-real", cfg.out)
    res = evaluate_real(cfg, sets, model, extra, weights, out)
    print(markdown_table(res))
    files = ["results.json", "results.md", *(f"examples_{n}.png" for n in res["sets"]), "summary.json"]
    print(f"wrote {', '.join(f for f in files if (out / f).is_file())} into {out}")
    return 0
