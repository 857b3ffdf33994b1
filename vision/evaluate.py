"""`microfarm eval-segmenter`: the PASCAL-5i protocol on the held-out fold(s) of a rendered dataset.

For each fold and shot count, ``--episodes`` episodes (deterministic: ``--seed``); on exactly the same
episodes it scores the guided network without CRF, with the dense CRF (pydensecrf) and with the mean-field
CRF (``models.crf``); the same three blended with the support's colour histogram (``--colour-prior W``, the
predictors' default pipeline, ``models.colour_prior``; rows ``colour*``); and the two baselines of
``vision.baselines`` (excess green + Otsu, which ignores the support; colour-histogram back-projection from
the support); with ``--crf-gate`` (default) also the default pipeline's CRF rows gated by
``models.crf_gate`` (the CRF kept for an episode only if it does not lower the IoU on the support images;
rows ``*_gated``). Metrics: class-wise mIoU and FB-IoU (``vision.metrics``). Images are scored at the dataset's
own size; the network sees ``--imgsz`` (each side of ``--scales``, probabilities averaged).

Writes into ``runs/eval-segmenter/<N>/`` (or ``--out``): ``results.json`` (every metric, per-class IoU,
seconds per frame of each method, the config), ``results.md`` (the table) and ``examples.png`` (support,
query, truth and every method's prediction for the first episodes of the first fold). ``--merge`` joins
several runs' results instead (``vision.eval_merge``). The flags and the rows they ask for are in
``vision.eval_config``, the labels and the table in ``vision.eval_report``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from microfarm_toolkit import UsageError, atomic_write_json, atomic_write_text, given_fields, next_run_dir, parse_config
from models.colour_prior import ColourHistogram, blend
from models.crf_gate import keeps_crf, support_crf_gain
from models.pipeline import crf_refine
from vision.baselines import exg_otsu
from vision.episodes import EpisodeSampler, SegmentationDataset
from vision.eval_config import DEFAULT_WEIGHTS, EvalConfig, EvalPlan
from vision.eval_report import METHODS, SHORT, markdown_table
from vision.metrics import AbsentMetrics, SegmentationMetrics, binary_iou

__all__ = ["EvalConfig", "evaluate", "cli", "METHODS", "markdown_table"]


def evaluate(cfg: EvalConfig, out: Path) -> dict[str, Any]:
    """Run the evaluation of ``cfg``; writes results.json, results.md, examples.png into ``out``."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = SegmentationDataset(cfg.data)  # type: ignore[arg-type]
    weights, model, extra = _load_weights(cfg)
    folds = _folds(cfg, ds, extra)
    shots = sorted(set(cfg.shots)) or [1, 5]
    scorer = _Scorer(cfg, EvalPlan.of(cfg), model)
    results: dict[str, Any] = {"folds": {}}
    rows: list[dict[str, Any]] = []
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(folds) * len(shots) * cfg.episodes, desc="eval-segmenter", unit="episode",
                   dynamic_ncols=True)
    t_all = time.perf_counter()
    try:
        for fold in folds:
            results["folds"][str(fold)] = {}
            for k in shots:
                examples = rows if fold == folds[0] and k == shots[0] else None
                results["folds"][str(fold)][str(k)] = _score_episodes(scorer, ds, fold, k, examples, bar)
    finally:
        if bar is not None:
            bar.close()
    _summarise(results, cfg, scorer, shots, weights, extra, time.perf_counter() - t_all)
    _write(out, results, rows)
    return results


def _load_weights(cfg: EvalConfig) -> tuple[Path, Any, dict[str, Any]]:
    """The weights file (``--weights`` or the shipped one), the network and its training record."""
    from models.weights import WeightsError

    weights = Path(cfg.weights) if cfg.weights is not None else DEFAULT_WEIGHTS
    try:
        from models.guided_net import load_guided_net

        model, extra = load_guided_net(weights, cfg.device)
    except WeightsError as e:
        raise UsageError(str(e)) from None
    return weights, model, extra


def _folds(cfg: EvalConfig, ds: SegmentationDataset, extra: dict[str, Any]) -> list[int]:
    """The folds to score (``--fold``, else the one the weights were trained without); warns about training folds."""
    folds = cfg.fold or [int(extra.get("fold", 0))]
    bad = [f for f in folds if f >= len(ds.folds)]
    if bad:
        raise UsageError(f"fold(s) {bad} do not exist; the dataset has folds 0..{len(ds.folds) - 1}")
    trained_on = extra.get("train_folds")
    if trained_on is not None:
        seen = sorted(set(folds) & set(trained_on))
        if seen:
            import warnings

            warnings.warn(f"fold(s) {seen} were training folds of these weights: not a held-out score", stacklevel=3)
    return folds


class _Scorer:
    """Every method of an ``EvalPlan`` on an episode, with the seconds each takes (``seconds``, ``frames``)."""

    def __init__(self, cfg: EvalConfig, plan: EvalPlan, model: Any) -> None:
        from vision.predictor import FewShotSegmenter
        from vision.torch_backend import TorchBackend

        self.cfg, self.plan = cfg, plan
        self.seg = FewShotSegmenter(model, crf="none", imgsz=cfg.imgsz, device=cfg.device, colour_prior=0.0,
                                    scales=cfg.scale_list())
        # --fusion fit: the colour rows' probabilities from cue weights fitted on each support (models.cue_fusion)
        self.fit_seg = FewShotSegmenter(self.seg.model, crf="none", imgsz=cfg.imgsz, device=cfg.device,
                                        colour_prior=plan.weight, crf_gate=False, scales=cfg.scale_list(),
                                        fusion="fit") if plan.colour and cfg.fusion == "fit" else None
        params = cfg.crf_params()
        self.backends = {c: TorchBackend(self.seg.model, self.seg.device, c, params)  # the predictors' CRF step
                         for c in plan.crfs}
        self.seconds = dict.fromkeys(plan.methods, 0.0)
        self.frames = dict.fromkeys(plan.methods, 0)
        self.last_seconds: dict[str, float] = {}

    def refine(self, crf: str, fg: np.ndarray, q: np.ndarray) -> np.ndarray:
        """fg (H,W) float32 -> the CRF's (H,W) bool mask (``models.pipeline.crf_refine``, as the predictors)."""
        return crf_refine(self.backends[crf], fg, q) >= 0.5

    def timed(self, method: str, fn: Any, *args: Any, count: bool = True) -> Any:
        """fn(*args), its seconds counted for ``method`` (and one frame if ``count``)."""
        t = time.perf_counter()
        out = fn(*args)
        self.last_seconds[method] = time.perf_counter() - t
        self.seconds[method] += self.last_seconds[method]
        self.frames[method] += int(count)
        return out

    @staticmethod
    def untimed(method: str, fn: Any, *args: Any, count: bool = True) -> Any:
        return fn(*args)

    def predict(self, q: np.ndarray, fg: np.ndarray, hist: ColourHistogram | None, with_crf: bool,
                run: Any, crf_on: dict[str, bool]) -> dict[str, np.ndarray]:
        """Every method's (H,W) bool mask of query ``q`` from the network's ``fg``, the support's ``hist`` and the
        gate's decision per CRF (``crf_on``)."""
        plan = self.plan
        preds = {"none": fg >= 0.5}
        cp = run(plan.hist_key, hist.prob, q) if hist is not None else None
        fused = None
        if plan.colour:
            fused = self.combine(q, fg, cp)
            preds["colour"] = fused >= 0.5
        if with_crf:
            for sub in ("none", "colour"):
                if f"{sub}_subset" in plan.methods:
                    preds[f"{sub}_subset"] = preds[sub]
            for crf in plan.crfs:
                preds[crf] = run(crf, self.refine, crf, fg, q)
                if fused is not None:
                    preds[f"colour_{crf}"] = run(f"colour_{crf}", self.refine, crf, fused, q)
                if plan.gated:
                    preds[f"{plan.pipeline}{crf}_gated"] = preds[f"{plan.pipeline}{crf}" if crf_on[crf] else plan.uncrf]
        if self.cfg.baselines:
            preds["exg_otsu"] = run("exg_otsu", exg_otsu, q)
            preds["histogram"] = cp >= 0.5
        return preds

    def combine(self, q: np.ndarray, fg: np.ndarray, cp: np.ndarray) -> np.ndarray:
        """The colour rows' (H,W) float32 probabilities of frame q: the blend of the network's fg and the colour
        prior cp, or with --fusion fit the fitted cues (``fit_seg``, its support set by ``net``)."""
        if self.fit_seg is not None:
            return self.fit_seg.fused(q)
        return blend(fg, cp, self.plan.weight)

    def net(self, ep: Any) -> np.ndarray:
        self.seg.set_support(ep.support_images, ep.support_masks)
        if self.fit_seg is not None:
            self.fit_seg.set_support(ep.support_images, ep.support_masks)
        return self.seg.predict(ep.query_image)[0]

    @staticmethod
    def fit_hist(ep: Any) -> ColourHistogram:
        return ColourHistogram().fit(ep.support_images, ep.support_masks)

    def gate(self, ep: Any, hist: ColourHistogram | None) -> dict[str, bool]:
        """Per CRF: whether it keeps the support's own IoU (``models.crf_gate``), the predictors' check; its time
        (the pipeline on the K support images, computed once here for both CRFs but counted in full for each, as
        a predictor pays it, plus that CRF on them) counts for the gated row."""
        plan = self.plan
        t = time.perf_counter()
        fused = {}
        for img in ep.support_images:
            fg = self.seg.predict(img)[0]
            fused[id(img)] = np.clip(self.combine(img, fg, hist.prob(img)), 0, 1) if plan.colour and hist else fg
        shared = time.perf_counter() - t
        shots = [(img, m != 0) for img, m in zip(ep.support_images, ep.support_masks, strict=True)]
        out = {}
        for crf in plan.crfs:
            t = time.perf_counter()
            out[crf] = keeps_crf(*support_crf_gain(shots, lambda img: fused[id(img)], lambda f, img, c=crf: self.refine(
                c, f, img).astype(np.float32)))
            self.seconds[f"{plan.pipeline}{crf}_gated"] += shared + time.perf_counter() - t
            self.frames[f"{plan.pipeline}{crf}_gated"] += 1
        return out


def _score_episodes(scorer: _Scorer, ds: SegmentationDataset, fold: int, k: int,
                    examples: list[dict[str, Any]] | None, bar: Any) -> dict[str, Any]:
    """Every method on ``--episodes`` K-shot episodes of ``fold`` -> its metrics per method; the first episodes go
    into ``examples`` (the examples.png rows) when given."""
    cfg, plan = scorer.cfg, scorer.plan
    methods, gated, crf_n, pipeline = plan.methods, plan.gated, plan.crf_n, plan.pipeline
    sampler = EpisodeSampler(ds, [fold], shots=k, min_pixels=cfg.min_pixels, seed=cfg.seed + fold)
    mets = {m: SegmentationMetrics() for m in methods}
    absent = {m: AbsentMetrics() for m in methods}
    kept = dict.fromkeys(gated, 0)  # episodes whose support check kept the CRF
    for i in range(cfg.episodes):
        ep = sampler.episode(i)
        q, truth = ep.query_image, ep.query_mask.astype(bool)
        fg = scorer.timed("none", scorer.net, ep)
        hist = scorer.timed(plan.hist_key, scorer.fit_hist, ep, count=False) if plan.colour or cfg.baselines else None
        crf_on = scorer.gate(ep, hist) if gated and i < crf_n else {}
        preds = scorer.predict(q, fg, hist, i < crf_n, scorer.timed, crf_on)
        for c, on in crf_on.items():  # the gated row's time: its check plus the CRF when it runs
            kept[f"{pipeline}{c}_gated"] += on
            if on:
                scorer.seconds[f"{pipeline}{c}_gated"] += scorer.last_seconds[f"{pipeline}{c}"]
        for m, p in preds.items():
            mets[m].update(p, truth, ep.class_id)
        j = sampler.absent_frame(i, ep.class_id) if cfg.absent else None
        if j is not None:  # the same support, a frame without its class: what gets marked
            qa = ds.image(j)
            for m, p in scorer.predict(qa, scorer.seg.predict(qa)[0], hist, i < crf_n, scorer.untimed,
                                       crf_on).items():
                absent[m].update(p, ep.class_id)
        if examples is not None and len(examples) < cfg.examples and len(preds) == len(methods):
            shown = [m for m in methods if not m.endswith("_subset")]
            examples.append({"support": ep.support_images[0], "support_mask": ep.support_masks[0], "query": q,
                             "truth": truth, "preds": {SHORT[m]: preds[m] for m in shown},
                             "ious": {SHORT[m]: binary_iou(preds[m], truth) for m in shown},
                             "title": f"{_species_name(ds, ep.class_id)}, {k}-shot"})
        if bar is not None:
            bar.update(1)
    res = {m: {**mets[m].summary(), **absent[m].summary(mets[m])} for m in methods if mets[m].episodes}
    for m, n in kept.items():  # the share of episodes (supports) for which the gate kept the CRF
        res[m]["crf_kept"] = n / min(crf_n, cfg.episodes)
    return res


def _summarise(results: dict[str, Any], cfg: EvalConfig, scorer: _Scorer, shots: list[int], weights: Path,
               extra: dict[str, Any], seconds: float) -> None:
    """Add to ``results`` what results.json records besides the metrics: methods, timings, weights, config."""
    plan, secs, frames = scorer.plan, scorer.seconds, scorer.frames
    methods, crf_n = plan.methods, plan.crf_n
    results["shots"] = shots
    results["methods"] = methods
    if plan.colour:  # the network's time plus the colour histogram's
        secs["colour"], frames["colour"] = secs["none"] + secs["histogram" if cfg.baselines else "colour"], \
            frames["none"]
    results["seconds_per_frame"] = {m: secs[m] / frames[m] for m in methods if frames[m]}
    results["seconds"] = seconds
    results["weights"] = str(weights)
    results["weights_extra"] = extra
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    results["config"]["crf_episodes"] = min(crf_n, cfg.episodes)
    results["config"]["scales"] = cfg.scale_list()
    if "none_subset" in methods:
        results["note"] = (f"CRF rows use the first {crf_n} episodes; compare them with 'none_subset' / "
                           "'colour_subset' (the network alone / with the colour prior on those episodes) for the "
                           "CRF's gain")


def _write(out: Path, results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """results.json, results.md and (with example rows) examples.png."""
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown_table(results))
    if rows:
        from vision.plots import example_grid

        example_grid(out / "examples.png", rows)


def _species_name(ds: SegmentationDataset, cid: int) -> str:
    for s in ds.species:
        if int(s.get("id", -1)) == int(cid):
            return str(s.get("name", cid))
    return str(cid)


def cli(argv: list[str]) -> int:
    cfg = parse_config(EvalConfig, argv, prog="microfarm eval-segmenter")
    cfg.validate()
    if cfg.merge:
        from vision.eval_merge import merge_results

        other = sorted(given_fields(argv) - {"merge", "out"})
        if other:
            raise UsageError("--merge takes only --out (the merged runs keep their own settings), got "
                             f"--{other[0].replace('_', '-')}")
        res = merge_results(cfg.merge)  # read and check everything before creating the output folder
        table = markdown_table(res)
        out = next_run_dir("eval-segmenter", cfg.out)
        atomic_write_json(out / "results.json", res)
        atomic_write_text(out / "results.md", table)
        print(table)
        print(f"wrote {out / 'results.json'}, {out / 'results.md'}")
        return 0
    out = next_run_dir("eval-segmenter", cfg.out)
    res = evaluate(cfg, out)
    print(markdown_table(res))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}" + (", examples.png" if cfg.examples else ""))
    return 0
