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
several runs' results instead (``vision.eval_merge``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from microfarm import UsageError, atomic_write_json, atomic_write_text, given_fields, next_run_dir, parse_config
from models.colour_prior import ColourHistogram, ColourPriorFlags, blend
from models.crf_gate import CRFGateFlags, keeps_crf, support_crf_gain
from models.scales import ScaleFlags, input_sides
from vision.baselines import exg_otsu
from vision.densecrf import CRFFlags
from vision.episodes import EpisodeSampler, SegmentationDataset
from vision.metrics import AbsentMetrics, SegmentationMetrics, binary_iou

__all__ = ["EvalConfig", "evaluate", "cli", "METHODS", "markdown_table"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "segmenter.safetensors"
NET_METHODS = ("none", "dense", "meanfield")
COLOUR_METHODS = ("colour", "colour_dense", "colour_meanfield")
BASELINES = ("exg_otsu", "histogram")
METHODS = NET_METHODS + COLOUR_METHODS + BASELINES
LABELS = {"none": "guided net", "none_subset": "guided net (on the CRF episodes)",
          "dense": "guided net + dense CRF", "meanfield": "guided net + mean-field CRF",
          "colour": "guided net + colour prior", "colour_subset": "guided net + colour prior (on the CRF episodes)",
          "colour_dense": "guided net + colour prior + dense CRF",
          "colour_meanfield": "guided net + colour prior + mean-field CRF",
          "dense_gated": "guided net + dense CRF, gated", "meanfield_gated": "guided net + mean-field CRF, gated",
          "colour_dense_gated": "guided net + colour prior + dense CRF, gated",
          "colour_meanfield_gated": "guided net + colour prior + mean-field CRF, gated",
          "exg_otsu": "ExG + Otsu (baseline)", "histogram": "colour histogram (baseline)"}

SHORT = {"none": "net", "dense": "net+dense CRF", "meanfield": "net+mean-field", "colour": "net+colour",
         "colour_dense": "net+colour+dense", "colour_meanfield": "net+colour+MF", "dense_gated": "net+dense gated",
         "meanfield_gated": "net+MF gated", "colour_dense_gated": "net+colour+dense gated",
         "colour_meanfield_gated": "net+colour+MF gated", "exg_otsu": "ExG+Otsu", "histogram": "histogram"}


@dataclasses.dataclass
class EvalConfig(ColourPriorFlags, CRFFlags, CRFGateFlags, ScaleFlags):
    """Evaluate the few-shot segmenter on held-out class folds (class-wise mIoU, FB-IoU)."""

    data: Path | None = dataclasses.field(default=None, metadata={
        "help": "rendered segmentation dataset (`microfarm render --task segmentation`; required)"})
    weights: Path | None = dataclasses.field(default=None, metadata={
        "help": f"segmenter weights (default: the shipped {DEFAULT_WEIGHTS.name})"})
    out: Path | None = dataclasses.field(default=None, metadata={
        "help": "output folder (default runs/eval-segmenter/<N>)"})
    fold: list[int] = dataclasses.field(default_factory=list, metadata={
        "help": "held-out fold(s) to evaluate (default: the fold the weights were trained without)"})
    shots: list[int] = dataclasses.field(default_factory=list, metadata={"help": "shot counts (default 1 and 5)"})
    episodes: int = dataclasses.field(default=1000, metadata={"help": "episodes per fold and shot count"})
    crf: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "CRF to score besides the network alone: dense or meanfield; 'off' for none (default: both)"})
    crf_episodes: int = dataclasses.field(default=0, metadata={
        "help": "score the CRFs on the first N episodes only (0: all); the table says so"})
    baselines: bool = dataclasses.field(default=True, metadata={"help": "also score the two baselines"})
    absent: bool = dataclasses.field(default=True, metadata={
        "help": "also run every method on a frame WITHOUT the episode's class (same support) and report how much "
                "of it is marked"})
    imgsz: int = dataclasses.field(default=256, metadata={"help": "network input side in pixels"})
    min_pixels: int = dataclasses.field(default=64, metadata={"help": "min class pixels for a frame to be used"})
    seed: int = dataclasses.field(default=12345, metadata={"help": "episode seed (same episodes for every method)"})
    examples: int = dataclasses.field(default=6, metadata={"help": "rows of the examples.png grid (0: none)"})
    device: str = dataclasses.field(default="cpu", metadata={"help": "torch device: cpu or cuda"})
    threads: int = dataclasses.field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})
    crf_gate: bool = dataclasses.field(default=True, metadata={
        "help": "also score the predictors' pipeline with each CRF behind the CRF gate (rows *_gated: the CRF kept "
                "for an episode only if it does not lower the IoU on its support images)"})
    merge: list[Path] = dataclasses.field(default_factory=list, metadata={
        "help": "instead of evaluating: join the results of these eval-segmenter runs (repeatable; one per "
                "held-out fold, each with its own weights) into one table with the mean over folds"})

    def validate(self) -> None:
        self.crf_params()
        self.check_colour_prior()
        if self.merge:
            return
        if self.data is None:
            raise UsageError("--data is required: a folder written by `microfarm render --task segmentation`")
        if self.episodes < 1:
            raise UsageError(f"--episodes must be at least 1, got {self.episodes}")
        bad = [k for k in self.shots if not 1 <= k <= 20]
        if bad:
            raise UsageError(f"--shots must be in 1..20, got {bad}")
        bad = [f for f in self.fold if not 0 <= f <= 3]
        if bad:
            raise UsageError(f"--fold must be 0..3, got {bad}")
        bad = [c for c in self.crf if c not in ("dense", "meanfield", "off")]
        if bad:
            raise UsageError(f"--crf {bad[0]!r} is not valid; choose dense, meanfield or off")
        if self.crf_episodes < 0 or self.examples < 0 or self.threads < 0:
            raise UsageError("--crf-episodes, --examples and --threads must be >= 0")
        if not 16 <= self.imgsz <= 2048:
            raise UsageError(f"--imgsz must be in 16..2048, got {self.imgsz}")
        self.check_scales(self.imgsz)
        if self.device not in ("cpu", "cuda"):
            raise UsageError(f"--device {self.device!r} is not valid; choose cpu or cuda")


def _crfs(cfg: EvalConfig) -> list[str]:
    if "off" in cfg.crf:
        return []
    return list(dict.fromkeys(cfg.crf)) if cfg.crf else ["dense", "meanfield"]


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a markdown table: one row per method, mIoU / FB-IoU per fold x shots (in %)."""
    folds = sorted(results["folds"], key=int)
    shots = results["shots"]
    cols = [(f, k) for f in folds for k in shots]
    multi = len(folds) > 1
    head = [f"fold {f} {k}-shot mIoU / FB-IoU" for f, k in cols]
    head += [f"mean {k}-shot mIoU" for k in shots] if multi else []
    lines = ["| method | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(head)]
    for m in results["methods"]:
        cells = []
        for f, k in cols:
            r = results["folds"][f][str(k)].get(m)
            cells.append(f"{100 * r['miou']:.1f} / {100 * r['fb_iou']:.1f}" if r else "-")
        if multi:
            for k in shots:
                v = [results["folds"][f][str(k)][m]["miou"] for f in folds if m in results["folds"][f][str(k)]]
                cells.append(f"{100 * np.mean(v):.1f}" if v else "-")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    n = {f"{f}/{k}": results["folds"][f][str(k)] for f, k in cols}
    any_r = next(iter(n.values()))
    eps = next(iter(any_r.values()))["episodes"]
    note = f"\n{eps} episodes per fold and shot count"
    crf_eps = results["config"].get("crf_episodes") or 0
    if crf_eps and crf_eps < results["config"]["episodes"]:
        note += f"; the CRF rows are on the first {crf_eps} of them (the other rows on all)"
    sides = input_sides(results["config"]["imgsz"], results["config"].get("scales") or [])
    note += f"; network input {' and '.join(f'{s}x{s}' for s in sides)}" + (
        " (probabilities averaged)" if len(sides) > 1 else "") + ", scored at the dataset's size."
    sec = results.get("seconds_per_frame", {})
    if sec:
        note += (" Seconds per frame (network: the guide from the support plus the prediction, per episode; CRFs:"
                 " the CRF alone; gated CRFs: the gate's check (the network, colour prior and CRF on each support"
                 " image) plus the CRF on the query when it runs, per episode; baselines: fit and predict): ")
        note += ", ".join(f"{LABELS.get(m, m)} {v:.4f}" for m, v in sec.items()) + "."
    kept = [m for m in results["methods"] if any("crf_kept" in results["folds"][f][str(k)].get(m, {})
                                                  for f, k in cols)]
    for m in kept:
        cells = [f"{100 * results['folds'][f][str(k)][m]['crf_kept']:.0f}%" if "crf_kept" in results["folds"][f][
            str(k)].get(m, {}) else "-" for f, k in cols]
        note += (f" {LABELS.get(m, m)}: the gate kept the CRF for {', '.join(cells)} of the episodes "
                 f"({', '.join(f'fold {f} {k}-shot' for f, k in cols)}).")
    return "\n".join(lines) + "\n" + note + "\n" + _absent_table(results, cols)


def _absent_table(results: dict[str, Any], cols: list[tuple[str, int]]) -> str:
    """The frames-without-the-class table (``--absent``): mean % of the frame marked / % of frames with > 1%."""
    cell = {m: [results["folds"][f][str(k)].get(m, {}) for f, k in cols] for m in results["methods"]}
    if not any("absent_marked" in r for rs in cell.values() for r in rs):
        return ""
    head = [f"fold {f} {k}-shot" for f, k in cols]
    lines = ["", "Frames WITHOUT the class asked for (the same supports): mean % of the frame marked / % of frames "
             "with more than 1% marked (lower is better) / feed mIoU, the mIoU when those marked pixels count as "
             "false positives too (one such frame per episode; higher is better)", "",
             "| method | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(head)]
    for m in results["methods"]:
        vals = [f"{100 * r['absent_marked']:.1f} / {100 * r['absent_alarm']:.0f} / "
                + (f"{100 * r['feed_miou']:.1f}" if "feed_miou" in r else "-")  # runs from before feed mIoU
                if "absent_marked" in r else "-" for r in cell[m]]
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def evaluate(cfg: EvalConfig, out: Path) -> dict[str, Any]:
    """Run the evaluation of ``cfg``; writes results.json, results.md, examples.png into ``out``."""
    import torch

    from models.pipeline import crf_refine
    from models.weights import WeightsError
    from vision.predictor import FewShotSegmenter
    from vision.torch_backend import TorchBackend

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = SegmentationDataset(cfg.data)  # type: ignore[arg-type]
    weights = Path(cfg.weights) if cfg.weights is not None else DEFAULT_WEIGHTS
    try:
        from models.guided_net import load_guided_net

        model, extra = load_guided_net(weights, cfg.device)
    except WeightsError as e:
        raise UsageError(str(e)) from None
    folds = cfg.fold or [int(extra.get("fold", 0))]
    bad = [f for f in folds if f >= len(ds.folds)]
    if bad:
        raise UsageError(f"fold(s) {bad} do not exist; the dataset has folds 0..{len(ds.folds) - 1}")
    trained_on = extra.get("train_folds")
    if trained_on is not None:
        seen = sorted(set(folds) & set(trained_on))
        if seen:
            import warnings

            warnings.warn(f"fold(s) {seen} were training folds of these weights: not a held-out score", stacklevel=2)
    shots = sorted(set(cfg.shots)) or [1, 5]
    crfs = _crfs(cfg)
    weight = cfg.check_colour_prior()
    colour = weight > 0
    pipeline = "colour_" if colour else ""  # the predictors' pipeline, whose CRF the gate decides on
    uncrf = "colour" if colour else "none"  # that pipeline without a CRF
    gated = [f"{pipeline}{c}_gated" for c in crfs] if cfg.crf_gate else []
    methods = ["none", *(["colour"] if colour else []), *crfs, *(f"colour_{c}" for c in crfs if colour), *gated,
               *(BASELINES if cfg.baselines else ())]
    crf_n = cfg.crf_episodes or cfg.episodes
    if crfs and crf_n < cfg.episodes:  # the network alone on the CRF's episodes: the CRF's gain is against it
        methods[1 + colour:1 + colour] = ["none_subset", *(["colour_subset"] if colour else [])]
    seg = FewShotSegmenter(model, crf="none", imgsz=cfg.imgsz, device=cfg.device, colour_prior=0.0,
                           scales=cfg.scale_list())
    params = cfg.crf_params()
    backends = {c: TorchBackend(seg.model, seg.device, c, params) for c in crfs}  # the predictors' CRF step

    def refine(crf: str, fg: np.ndarray, q: np.ndarray) -> np.ndarray:
        """fg (H,W) float32 -> the CRF's (H,W) bool mask (``models.pipeline.crf_refine``, as the predictors)."""
        return crf_refine(backends[crf], fg, q) >= 0.5

    results: dict[str, Any] = {"folds": {}}
    seconds = dict.fromkeys(methods, 0.0)
    frames = dict.fromkeys(methods, 0)
    last_seconds: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(folds) * len(shots) * cfg.episodes, desc="eval-segmenter", unit="episode",
                   dynamic_ncols=True)
    t_all = time.perf_counter()

    def timed(method: str, fn: Any, *args: Any, count: bool = True) -> Any:
        """fn(*args), its seconds counted for ``method`` (and one frame if ``count``)."""
        t = time.perf_counter()
        out = fn(*args)
        last_seconds[method] = time.perf_counter() - t
        seconds[method] += last_seconds[method]
        frames[method] += int(count)
        return out

    def untimed(method: str, fn: Any, *args: Any, count: bool = True) -> Any:
        return fn(*args)

    hist_key = "histogram" if cfg.baselines else "colour"  # the histogram's time counts for both that use it

    def predict(q: np.ndarray, fg: np.ndarray, hist: ColourHistogram | None, with_crf: bool,
                run: Any, crf_on: dict[str, bool]) -> dict[str, np.ndarray]:
        """Every method's (H,W) bool mask of query ``q`` from the network's ``fg``, the support's ``hist`` and the
        gate's decision per CRF (``crf_on``)."""
        preds = {"none": fg >= 0.5}
        cp = run(hist_key, hist.prob, q) if hist is not None else None
        fused = None
        if colour:
            fused = blend(fg, cp, weight)
            preds["colour"] = fused >= 0.5
        if with_crf:
            for sub in ("none", "colour"):
                if f"{sub}_subset" in methods:
                    preds[f"{sub}_subset"] = preds[sub]
            for crf in crfs:
                preds[crf] = run(crf, refine, crf, fg, q)
                if fused is not None:
                    preds[f"colour_{crf}"] = run(f"colour_{crf}", refine, crf, fused, q)
                if gated:
                    preds[f"{pipeline}{crf}_gated"] = preds[f"{pipeline}{crf}" if crf_on[crf] else uncrf]
        if cfg.baselines:
            preds["exg_otsu"] = run("exg_otsu", exg_otsu, q)
            preds["histogram"] = cp >= 0.5
        return preds

    def net(ep: Any) -> np.ndarray:
        seg.set_support(ep.support_images, ep.support_masks)
        return seg.predict(ep.query_image)[0]

    def fit_hist(ep: Any) -> ColourHistogram:
        return ColourHistogram().fit(ep.support_images, ep.support_masks)

    def gate(ep: Any, hist: ColourHistogram | None) -> dict[str, bool]:
        """Per CRF: whether it keeps the support's own IoU (``models.crf_gate``), the predictors' check; its time
        (the pipeline on the K support images, computed once here for both CRFs but counted in full for each, as
        a predictor pays it, plus that CRF on them) counts for the gated row."""
        t = time.perf_counter()
        fused = {}
        for img in ep.support_images:
            fg = seg.predict(img)[0]
            fused[id(img)] = np.clip(blend(fg, hist.prob(img), weight), 0, 1) if colour and hist else fg
        shared = time.perf_counter() - t
        shots = [(img, m != 0) for img, m in zip(ep.support_images, ep.support_masks, strict=True)]
        out = {}
        for crf in crfs:
            t = time.perf_counter()
            out[crf] = keeps_crf(*support_crf_gain(shots, lambda img: fused[id(img)], lambda f, img, c=crf: refine(
                c, f, img).astype(np.float32)))
            seconds[f"{pipeline}{crf}_gated"] += shared + time.perf_counter() - t
            frames[f"{pipeline}{crf}_gated"] += 1
        return out

    try:
        for fold in folds:
            results["folds"][str(fold)] = {}
            for k in shots:
                sampler = EpisodeSampler(ds, [fold], shots=k, min_pixels=cfg.min_pixels, seed=cfg.seed + fold)
                mets = {m: SegmentationMetrics() for m in methods}
                absent = {m: AbsentMetrics() for m in methods}
                kept = dict.fromkeys(gated, 0)  # episodes whose support check kept the CRF
                for i in range(cfg.episodes):
                    ep = sampler.episode(i)
                    q, truth = ep.query_image, ep.query_mask.astype(bool)
                    fg = timed("none", net, ep)
                    hist = timed(hist_key, fit_hist, ep, count=False) if colour or cfg.baselines else None
                    crf_on = gate(ep, hist) if gated and i < crf_n else {}
                    preds = predict(q, fg, hist, i < crf_n, timed, crf_on)
                    for c, on in crf_on.items():  # the gated row's time: its check plus the CRF when it runs
                        kept[f"{pipeline}{c}_gated"] += on
                        if on:
                            seconds[f"{pipeline}{c}_gated"] += last_seconds[f"{pipeline}{c}"]
                    for m, p in preds.items():
                        mets[m].update(p, truth, ep.class_id)
                    j = sampler.absent_frame(i, ep.class_id) if cfg.absent else None
                    if j is not None:  # the same support, a frame without its class: what gets marked
                        qa = ds.image(j)
                        for m, p in predict(qa, seg.predict(qa)[0], hist, i < crf_n, untimed, crf_on).items():
                            absent[m].update(p, ep.class_id)
                    if len(rows) < cfg.examples and fold == folds[0] and k == shots[0] and len(preds) == len(methods):
                        shown = [m for m in methods if not m.endswith("_subset")]
                        rows.append({"support": ep.support_images[0], "support_mask": ep.support_masks[0], "query": q,
                                     "truth": truth, "preds": {SHORT[m]: preds[m] for m in shown},
                                     "ious": {SHORT[m]: binary_iou(preds[m], truth) for m in shown},
                                     "title": f"{_species_name(ds, ep.class_id)}, {k}-shot"})
                    if bar is not None:
                        bar.update(1)
                results["folds"][str(fold)][str(k)] = {m: {**mets[m].summary(), **absent[m].summary(mets[m])}
                                                       for m in methods if mets[m].episodes}
                for m, n in kept.items():  # the share of episodes (supports) for which the gate kept the CRF
                    results["folds"][str(fold)][str(k)][m]["crf_kept"] = n / min(crf_n, cfg.episodes)
    finally:
        if bar is not None:
            bar.close()
    results["shots"] = shots
    results["methods"] = methods
    if colour:  # the network's time plus the colour histogram's
        seconds["colour"], frames["colour"] = seconds["none"] + seconds["histogram" if cfg.baselines else "colour"], \
            frames["none"]
    results["seconds_per_frame"] = {m: seconds[m] / frames[m] for m in methods if frames[m]}
    results["seconds"] = time.perf_counter() - t_all
    results["weights"] = str(weights)
    results["weights_extra"] = extra
    results["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    results["config"]["crf_episodes"] = min(crf_n, cfg.episodes)
    results["config"]["scales"] = cfg.scale_list()
    if "none_subset" in methods:
        results["note"] = (f"CRF rows use the first {crf_n} episodes; compare them with 'none_subset' / "
                           "'colour_subset' (the network alone / with the colour prior on those episodes) for the "
                           "CRF's gain")
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown_table(results))
    if rows:
        from vision.plots import example_grid

        example_grid(out / "examples.png", rows)
    return results


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
